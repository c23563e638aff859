/** boxback's own version, reported by agents and the controller. */
export const BOXBACK_VERSION = '0.1.0';
