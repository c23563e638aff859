{
  "targets": [
    {
      "target_name": "boxback_inotify",
      "sources": ["inotify.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
