#!/usr/bin/env bash
# Submit this hour's incremental fusion preprocessing to the jingle cluster, at most once.
#
# Called every hour by jingle-preprocess.timer (systemd) or jingle-preprocess.cron. The
# submission id carries the UTC date and hour, and Ray refuses a submission id it has seen, so
# a second firing within the hour (a retry, a catch-up after downtime, cron and the timer both
# installed) is refused by Ray instead of run twice: this script says so in one line and exits 0.
# Preprocessing is incremental, so each hour's run adds only the pairs that arrived since.
#
# Settings, from the environment or from the settings file that JINGLE_ENV_FILE names (both
# schedulers name /etc/jingle/preprocess.env: the unit with Environment=, cron on its line):
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
# The settings file is data, never shell code: it is read the way systemd's EnvironmentFile=
# reads it, for the subset of that format on which the two agree, and anything outside the
# subset is refused (one line naming FILE:LINE, exit 2) rather than guessed at:
#   - blank lines, and lines whose first non-blank character is # or ;, are skipped;
#   - KEY=VALUE, KEY matching [A-Za-z_][A-Za-z0-9_]*, blanks around = and at the ends ignored;
#   - VALUE is taken literally: $VAR, ${VAR}, $(...) and `...` stay as written (systemd does not
#     expand them either); 'single quotes' keep everything inside; "double quotes" unescape
#     \" \\ \` \$ and keep any other backslash; unquoted, \X is X;
#   - refused: `export KEY=VALUE` (shell syntax: systemd ignores that line), a line without =,
#     a bad KEY, an unclosed quote or text after the closing one, a line ending in a backslash
#     (a continuation: both readers would join it to the next line), an unquoted value
#     holding " #" (systemd keeps that "comment" in the value), and the names that change
#     which code the shell, the loader or Python run (PATH, LD_*, PYTHON*, BASH_ENV, IFS...:
#     JINGLE_PYTHON says which ray to use) or that the shell holds read-only (UID, EUID...);
#   - a file that group or others may write, or that is owned by anyone but root or this
#     user, is refused: its values choose the code that runs (JINGLE_PYTHON, JINGLE_DIR).
#
# Exit status: 0 the run succeeded, or this hour's run was already submitted; 75 another run
# still holds the shard folder (preprocess --if-busy exit), so this hour had nothing to do;
# 2 a setting is missing or the settings file is refused; anything else: the submission or
# the job failed (Ray's output shows).
set -u -o pipefail
umask 077  # as the unit's UMask=: the held-back output may name hosts and paths

say() { printf 'jingle-preprocess: %s\n' "$*"; }

# refuse FILE:LINE REASON: the settings file's one-line error, exit 2.
refuse() { say "$1: $2" >&2; exit 2; }

# The names this script will not take from the settings file (see the header).
name_changes_code() {
    case $1 in
        PATH | CDPATH | IFS | ENV | BASH* | SHELLOPTS | POSIXLY_CORRECT | PS[0-4] | PROMPT_COMMAND \
            | GLOBIGNORE | EXECIGNORE | TMOUT | LD_* | PYTHON*) return 0 ;;
        *) return 1 ;;
    esac
}

# unquote WHERE VALUE: VALUE (blanks already trimmed) as systemd's EnvironmentFile= reads it,
# into $unquoted; refuses what the header's subset leaves out.
unquote() {
    local where=$1 value=$2 index character quote=
    unquoted=
    case $value in
        \'*)
            [[ $value =~ ^\'([^\']*)\'$ ]] || refuse "$where" "unclosed single quote, or text after the closing quote"
            unquoted=${BASH_REMATCH[1]}
            return ;;
        \"*) quote=1; value=${value:1} ;;
    esac
    for ((index = 0; index < ${#value}; index++)); do
        character=${value:index:1}
        if [ "$character" = "\\" ]; then
            ((index + 1 < ${#value})) || refuse "$where" "the line ends in a backslash (a continuation line): put the value on one line"
            index=$((index + 1))
            character=${value:index:1}
            if [ -n "$quote" ] && [[ $character != [\"\\\`\$] ]]; then
                unquoted+="\\"  # "\n" is backslash-n to systemd, as to the shell
            fi
        elif [ -n "$quote" ] && [ "$character" = '"' ]; then
            ((index + 1 == ${#value})) || refuse "$where" "text after the closing double quote"
            return
        fi
        unquoted+=$character
    done
    [ -z "$quote" ] || refuse "$where" "unclosed double quote (a value must stay on its line)"
}

# read_env_file FILE: its assignments, in order, into env_keys / env_values (set by the caller,
# so that no key in the file can overwrite this function's own variables while it reads).
read_env_file() {
    local file=$1 line key value where number=0 owner mode
    read -r owner mode < <(stat -L -c '%u %a' -- "$file" 2>/dev/null) || refuse "$file" "cannot stat it"
    if [ "$owner" != 0 ] && [ "$owner" != "$EUID" ]; then
        refuse "$file" "owned by uid $owner, neither root nor this user (uid $EUID): its values choose the code that runs"
    fi
    if (( 8#$mode & 8#022 )); then
        refuse "$file" "group or others may write it (mode $mode): chmod go-w $file"
    fi
    while IFS= read -r line || [ -n "$line" ]; do
        number=$((number + 1))
        where="$file:$number"
        line=${line#"${line%%[![:space:]]*}"}  # leading blanks
        line=${line%"${line##*[![:space:]]}"}  # trailing blanks (and a CRLF file's \r)
        case $line in
            '') continue ;;
            '#'* | ';'*)
                # systemd before 254 continues a comment that ends in a backslash onto the next line
                [[ $line != *"\\" ]] || refuse "$where" "a comment ending in a backslash (systemd < 254 reads the next line as part of it)"
                continue ;;
        esac
        if [[ $line =~ ^export[[:space:]] ]]; then
            refuse "$where" "'export' is shell syntax, and systemd ignores the whole line: write KEY=VALUE"
        fi
        [[ $line == *=* ]] || refuse "$where" "not a KEY=VALUE line"
        key=${line%%=*}
        key=${key%"${key##*[![:space:]]}"}
        value=${line#*=}
        value=${value#"${value%%[![:space:]]*}"}
        [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || refuse "$where" "'$key' is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
        if name_changes_code "$key"; then
            refuse "$where" "$key changes which code this script or ray runs; not taken from a settings file (JINGLE_PYTHON names the Python)"
        fi
        ( unset -v "$key" ) 2>/dev/null || refuse "$where" "$key is one of the shell's own read-only variables"
        if [[ $value != [\'\"]* && $value =~ [[:space:]]\# ]]; then
            refuse "$where" "a '#' after a blank is part of the value to systemd, not a comment: move the comment to its own line or quote the value"
        fi
        unquote "$where" "$value"
        env_keys+=("$key")
        env_values+=("$unquoted")
    done < "$file"
}

if [ -n "${JINGLE_ENV_FILE:-}" ]; then
    [ -f "$JINGLE_ENV_FILE" ] && [ -r "$JINGLE_ENV_FILE" ] || { say "cannot read JINGLE_ENV_FILE=$JINGLE_ENV_FILE" >&2; exit 2; }
    env_keys=() env_values=()
    read_env_file "$JINGLE_ENV_FILE"
    for index in "${!env_keys[@]}"; do
        export -- "${env_keys[index]}=${env_values[index]}"
    done
fi
for name in RAY_ADDRESS JINGLE_DIR JINGLE_PAIRS JINGLE_OUT; do
    [ -n "${!name:-}" ] || { say "$name is not set: see deploy/README.md" >&2; exit 2; }
done
[ -d "$JINGLE_DIR/pipelines" ] || { say "JINGLE_DIR=$JINGLE_DIR is not a jingle checkout" >&2; exit 2; }
if [ -n "${JINGLE_PYTHON:-}" ]; then
    # an absolute path: a relative one would put "." (cron: the home folder) first on PATH,
    # and a ':' would add folders of its own
    [[ $JINGLE_PYTHON == /* && $JINGLE_PYTHON != *:* ]] \
        || { say "JINGLE_PYTHON=$JINGLE_PYTHON: give the absolute path of a venv's python, without ':'" >&2; exit 2; }
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
