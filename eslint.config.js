// Lint: typescript-eslint with type information, no floating promises, and the agent
// and controller never import each other's source.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', 'node_modules/**', 'coverage/**', '**/*.mjs', '**/*.js'] },
  ...tseslint.configs.recommended,
  {
    files: ['packages/**/*.ts'],
    languageOptions: { parserOptions: { projectService: true } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unsafe-function-type': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['packages/agent/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['@boxback/controller', '**/controller/src/**'] }] },
  },
  {
    files: ['packages/controller/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['@boxback/agent', '**/agent/src/**'] }] },
  },
);
