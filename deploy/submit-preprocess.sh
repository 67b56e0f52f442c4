#!/usr/bin/env bash
# Submit this hour's incremental fusion preprocessing to the jingle cluster, at most once.
#
# Called every hour by jingle-preprocess.timer (systemd) or jingle-preprocess.cron. The
# submission id carries the UTC date and hour, and Ray refuses a submission id it has seen, so
# a second firing within the hour (a retry, a catch-up after downtime, cron and the timer both
# installed) is refused by Ray instead of run twice: this script says so in one line and exits 0.
# Preprocessing is incremental, so each hour's run adds only the pairs that arrived since.
#
# Settings, from the environment (systemd: EnvironmentFile=/etc/jingle/preprocess.env; cron:
# JINGLE_ENV_FILE=/etc/jingle/preprocess.env, which this script reads):
#   RAY_ADDRESS          the head's dashboard, e.g. http://10.0.0.5:8265
#   JINGLE_DIR           a checkout of this repository, sent as the job's working directory
#   JINGLE_PAIRS         the pairs folder or manifest, on a filesystem every node mounts at the same path
#                        (pairs are read from files, not from a bucket)
#   JINGLE_OUT           the shard folder, on the same storage
#   JINGLE_PYTHON        optional: the Python whose `ray` submits (its folder goes first on PATH;
#                        cron's PATH has no venv), e.g. /opt/jingle/.venv/bin/python
#   RAY_AUTH_TOKEN_PATH  optional: the cluster's token file, if not ~/.ray/auth_token
#   JINGLE_ENV_FILE      optional: a file of KEY=value lines setting the above, read first
#
# Exit status: 0 the run succeeded, or this hour's run was already submitted; 75 another run
# still holds the shard folder (preprocess --if-busy exit), so this hour had nothing to do;
# 2 a setting is missing; anything else: the submission or the job failed (Ray's output shows).
set -u -o pipefail

say() { printf 'jingle-preprocess: %s\n' "$*"; }

if [ -n "${JINGLE_ENV_FILE:-}" ]; then
    [ -r "$JINGLE_ENV_FILE" ] || { say "cannot read JINGLE_ENV_FILE=$JINGLE_ENV_FILE" >&2; exit 2; }
    set -a
    # shellcheck disable=SC1090
    . "$JINGLE_ENV_FILE"
    set +a
fi
for name in RAY_ADDRESS JINGLE_DIR JINGLE_PAIRS JINGLE_OUT; do
    [ -n "${!name:-}" ] || { say "$name is not set: see deploy/README.md" >&2; exit 2; }
done
[ -d "$JINGLE_DIR/pipelines" ] || { say "JINGLE_DIR=$JINGLE_DIR is not a jingle checkout" >&2; exit 2; }
if [ -n "${JINGLE_PYTHON:-}" ]; then
    PATH="$(dirname -- "$JINGLE_PYTHON"):$PATH"
fi
command -v ray >/dev/null || { say "no ray on PATH: set JINGLE_PYTHON to the Python of a venv with the project" >&2; exit 2; }

# Ray 2.60 clusters check a token; the `ray job` CLI sends it only in token mode.
export RAY_AUTH_MODE=token
token_file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -r "$token_file" ]; then
    say "no cluster token at $token_file: copy the cluster's ~/.ray/auth_token there or set RAY_AUTH_TOKEN_PATH" >&2
    exit 2
fi

id="jingle-preprocess-$(date -u +%Y%m%d%H)"
output=$(mktemp)
trap 'rm -f "$output"' EXIT

# Ray's lines before "submitted successfully" are held back, so that a refusal is our one line
# rather than Ray's traceback; once the job is submitted its logs stream as they come.
hold_until_submitted() {
    local line streaming=0
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s\n' "$line" >> "$output"
        if [ "$streaming" = 1 ]; then
            printf '%s\n' "$line"
        elif [[ $line == *"submitted successfully"* ]]; then
            cat "$output"
            streaming=1
        fi
    done
}

ray job submit --address "$RAY_ADDRESS" --submission-id "$id" --working-dir "$JINGLE_DIR" \
    -- python -m pipelines.preprocess_fusion --pairs "$JINGLE_PAIRS" --out "$JINGLE_OUT" --if-busy exit \
    2>&1 | hold_until_submitted
status=${PIPESTATUS[0]}

if [ "$status" = 0 ]; then
    say "$id finished"
    exit 0
fi
# Ray 2.60's refusal (dashboard/modules/job/job_manager.py): "Job with submission_id ID already exists."
if grep -qF "submission_id $id already exists" "$output"; then
    say "this hour's run $id was already submitted; not submitting it again"
    exit 0
fi
grep -q "submitted successfully" "$output" || cat "$output"  # the held lines say why
if grep -q "is being written by another jingle run" "$output"; then
    say "$id: an earlier run still writes $JINGLE_OUT; this hour's pairs wait for the next run"
    exit 75
fi
say "$id failed (ray job submit exited $status)" >&2
exit "$status"
