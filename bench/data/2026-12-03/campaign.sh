#!/usr/bin/env bash
# YCSB campaign, 2026-12-03. Run from bench/. Binary built at the commit in each result.
set -u
B=/tmp/ycsb-campaign
R=/var/tmp/ycsb-res
D=/var/tmp/ycsb
ALL=heapkv,pebble,pebble-tuned,pebble-vsep,badger,badger-vlog,bbolt
C="-threads 16 -progress=false -dir $D"
log() { echo "$(date -u +%H:%M:%S) $*" >> $R/campaign.log; }
log start
# 1. 4 KiB, sync off: run 1 loads once per engine and runs A,B,C,F,D in order.
log 4k-seq-r1; $B -engine $ALL -sequence -workload a,b,c,f,d -runs 1 -records 600000 -ops 600000 -duration 30s -valuesize 4096 $C -json $R/ycsb-4k.jsonl -csv $R/ycsb-4k.csv >> $R/out-4k.txt 2>&1
# 2. 4 KiB E (fresh load).
log 4k-e; $B -engine $ALL -workload e -runs 1 -records 600000 -ops 600000 -duration 30s -valuesize 4096 $C -json $R/ycsb-4k.jsonl -csv $R/ycsb-4k.csv >> $R/out-4k.txt 2>&1
# 3. 4 KiB headline repeats (load, A, C): runs 2 and 3.
for r in 2 3; do
log 4k-ac-r$r; $B -engine $ALL -sequence -workload a,c -runs 1 -seed $r -records 600000 -ops 600000 -duration 30s -valuesize 4096 $C -json $R/ycsb-4k-ac.jsonl -csv $R/ycsb-4k-ac.csv >> $R/out-4k.txt 2>&1
done
# 4. 4 KiB, sync on: load + A.
log 4k-sync; $B -sync -engine $ALL -workload a -runs 1 -records 100000 -ops 600000 -duration 30s -valuesize 4096 $C -json $R/ycsb-sync.jsonl -csv $R/ycsb-sync.csv >> $R/out-sync.txt 2>&1
# 5. 16 KiB, sync off, 150k records (2.3 GiB): A,B,C,F,D then E.
log 16k-seq; $B -engine $ALL -sequence -workload a,b,c,f,d -runs 1 -records 150000 -ops 150000 -duration 30s -valuesize 16384 $C -json $R/ycsb-16k.jsonl -csv $R/ycsb-16k.csv >> $R/out-16k.txt 2>&1
log 16k-e; $B -engine $ALL -workload e -runs 1 -records 150000 -ops 150000 -duration 30s -valuesize 16384 $C -json $R/ycsb-16k.jsonl -csv $R/ycsb-16k.csv >> $R/out-16k.txt 2>&1
log done
