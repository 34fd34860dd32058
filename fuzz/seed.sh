#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the hex examples of protocol.md (blocks
# fenced with ```hex, label line first, see protocol.md section 12 and
# tests/common/hexdoc.rs). Idempotent: file names are the examples' names.
#
#   frame_decoder  each example behind the 2-byte input header `00 00`
#                  (default maximum frame, one byte at a time), each again
#                  with chunk sizes 1, 2, 5, 9, 0, and every c->s example
#                  then every s->c example back to back;
#   round_trip     each example as it is (the bytes drive the builders);
#   segment_scan, hint_scan, store_open
#                  each example behind a mode byte for every mode of the
#                  target (the built modes make valid segments from any
#                  bytes; the raw modes read the bytes as they are).
#
# Usage: fuzz/seed.sh   (from anywhere; needs awk and xxd)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
doc="$here/../protocol.md"
corpus="$here/corpus"

# "direction name hex..." per example, one line each.
examples="$(awk '
    /^```hex[[:space:]]*$/ { inblock = 1; label = ""; hex = ""; next }
    inblock && label == "" {
        dir = $2
        for (i = 3; i <= NF; i++) if ($i ~ /^name=/) name = substr($i, 6)
        label = dir
        next
    }
    inblock && /^```[[:space:]]*$/ { print label, name, hex; inblock = 0; next }
    inblock {
        sub(/#.*/, "")
        for (i = 1; i <= NF; i++) hex = hex $i
    }
' "$doc")"
[ -n "$examples" ] || { echo "no hex examples found in $doc" >&2; exit 1; }

put() { # put TARGET NAME HEX
    mkdir -p "$corpus/$1"
    printf '%s' "$3" | xxd -r -p > "$corpus/$1/$2"
}

count=0 all_cs="" all_sc=""
while read -r dir name hex; do
    count=$((count + 1))
    put frame_decoder "$name" "0000$hex"
    put frame_decoder "$name-chunks" "00050102050900$hex"
    put round_trip "$name" "$hex"
    for mode in 00 01 03 05 07 0f; do
        put store_open "$name-$mode" "$mode$hex"
    done
    for mode in 00 01; do
        put segment_scan "$name-$mode" "$mode$hex"
    done
    for mode in 00 01 02; do
        put hint_scan "$name-$mode" "$mode$hex"
    done
    if [ "$dir" = "c->s" ]; then all_cs="$all_cs$hex"; else all_sc="$all_sc$hex"; fi
done <<< "$examples"
put frame_decoder all-c2s "0000$all_cs"
put frame_decoder all-s2c "0000$all_sc"
put frame_decoder all-c2s-chunks "00030307ff$all_cs"
echo "seeded $count examples into $corpus"
