#!/bin/sh
# root=anklume is ours: tell dracut the root is handled (by anklume-root.service).
[ "$root" = "anklume" ] && rootok=1
