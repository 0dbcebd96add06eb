#!/usr/bin/env bash
# kcat (Debian's, linking librdkafka 2.0.2) against Freshet.
#   produce: write the records of each partition with acks=all (the topic must exist)
#   verify:  read every partition from the beginning and check the records exactly
# kcat sets headers per invocation, so every record carries client=kcat and its sequence
# number is in its value.
set -euo pipefail
mode=$1; shift
bootstrap= topic= count=300
while [ $# -gt 0 ]; do
  case $1 in
    --bootstrap) bootstrap=$2; shift 2 ;;
    --topic) topic=$2; shift 2 ;;
    --count) count=$2; shift 2 ;;
    --client) shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
value() { printf 'kcat-value-%d-%s' "$1" "$(printf 'x%.0s' $(seq 1 $(( $1 % 40 ))) )"; }
value0() { if [ $(( $1 % 40 )) -eq 0 ]; then printf 'kcat-value-%d-' "$1"; else value "$1"; fi; }
expected() { # partition offset key value
  local p=$1 off=0
  for ((i = p; i < count; i += 3)); do printf '%d\t%d\tkey-%d\t%s\tclient=kcat\n' "$p" "$off" "$i" "$(value0 $i)"; off=$((off + 1)); done
}
case $mode in
  produce)
    for p in 0 1 2; do
      for ((i = p; i < count; i += 3)); do printf 'key-%d:%s\n' "$i" "$(value0 $i)"; done |
        kcat -P -b "$bootstrap" -t "$topic" -p "$p" -K : -H client=kcat -X acks=all -X message.timeout.ms=30000
    done
    echo "ok: $count records acknowledged" ;;
  verify)
    for p in 0 1 2; do
      got=$(timeout 60 kcat -C -b "$bootstrap" -t "$topic" -p "$p" -o beginning -e -q -f '%p\t%o\t%k\t%s\t%h\n')
      want=$(expected "$p")
      if [ "$got" != "$want" ]; then
        echo "FAIL: partition $p differs" >&2
        diff <(echo "$want") <(echo "$got") | head -20 >&2
        exit 1
      fi
    done
    echo "ok: $count records verified exactly" ;;
  *) echo "usage: $0 produce|verify --bootstrap B --topic T [--count N]" >&2; exit 2 ;;
esac
