#!/bin/sh
# The nightly report's `count` task (a `run` task): a stand-in that counts
# the files under tickets/ (none in the example) and says when it ran.
# Its input, {"trigger": "nightly"}, comes on stdin; its stdout is the output.
set -eu
input=$(cat)
count=$(find tickets -type f 2>/dev/null | wc -l | tr -d ' ')
printf '{"tickets": %s, "at": "%s", "for": %s}\n' "$count" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$input"
