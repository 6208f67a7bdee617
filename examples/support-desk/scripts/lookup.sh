#!/bin/sh
# The ticket pipeline's `lookup` task (a `run` task of the embedded target).
# cortex hands it the task's input as JSON on stdin (and in
# $CORTEX_TASK_INPUT), e.g. {"id": 7}; what it prints on stdout, as JSON, is
# the task's output, read by `draft` as $(tasks.lookup.output.customer).
# A stand-in for a CRM lookup: every ticket belongs to the same customer.
set -eu
input=$(cat)
printf '{"customer": {"name": "Ada Example", "tier": "standard", "lookedUpFor": %s}}\n' "$input"
