#!/usr/bin/env bash
# YCSB campaign for 1 KB records (10 fields x 100 B), 2026-12-03, after the
# index got Bloom filters. Run from bench/ with the binary built by
#   go build -buildvcs=true -o /tmp/ycsb-campaign ./cmd/ycsb
# at the commit recorded in each result row.
set -u
B=/tmp/ycsb-campaign
R=/var/tmp/ycsb-res-1k
D=/var/tmp/ycsb
ALL=heapkv,pebble,pebble-tuned,pebble-vsep,badger,badger-vlog,bbolt
REC="-fieldcount 10 -fieldlength 100"
C="-threads 16 -progress=false -dir $D"
mkdir -p $R
log() { echo "$(date -u +%H:%M:%S) $*" >> $R/campaign.log; }
log start
# 1. Run 1: one load per engine (2.5M records, ~2.4 GiB), then A, B, C, F, D on it.
log 1k-seq-r1; $B -engine $ALL -sequence -workload a,b,c,f,d -runs 1 -seed 1 -records 2500000 -ops 2500000 -duration 20s $REC $C -json $R/ycsb-1k.jsonl -csv $R/ycsb-1k.csv >> $R/out.txt 2>&1
# 2. Runs 2 and 3 of the headline rows: load, A, C.
for r in 2 3; do
log 1k-ac-r$r; $B -engine $ALL -sequence -workload a,c -runs 1 -seed $r -records 2500000 -ops 2500000 -duration 20s $REC $C -json $R/ycsb-1k.jsonl -csv $R/ycsb-1k.csv >> $R/out.txt 2>&1
done
# 3. Sync on: load + A (100k records, as the 4 KiB sync table).
log 1k-sync; $B -sync -engine $ALL -workload a -runs 1 -records 100000 -ops 600000 -duration 30s $REC $C -json $R/ycsb-1k-sync.jsonl -csv $R/ycsb-1k-sync.csv >> $R/out.txt 2>&1
# 4. E (short scans) after a fresh load.
log 1k-e; $B -engine $ALL -workload e -runs 1 -records 2500000 -ops 2500000 -duration 20s $REC $C -json $R/ycsb-1k.jsonl -csv $R/ycsb-1k.csv >> $R/out.txt 2>&1
log done
