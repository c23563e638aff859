{
  "targets": [
    {
      "target_name": "boxback_inotify",
      "sources": ["inotify.c", "prefetch.c", "digest-files.c", "gcm.c", "pool-work.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
