#!/usr/bin/env bash
# Second part: 1 KB records (10 x 100 B), 2.5M records (~2.4 GiB), after campaign.sh.
set -u
B=/tmp/ycsb-campaign
R=/var/tmp/ycsb-res
D=/var/tmp/ycsb
ALL=heapkv,pebble,pebble-tuned,pebble-vsep,badger,badger-vlog,bbolt
C="-threads 16 -progress=false -dir $D"
log() { echo "$(date -u +%H:%M:%S) $*" >> $R/campaign.log; }
until grep -q ' done$' $R/campaign.log; do sleep 10; done
log 1k-seq; $B -engine $ALL -sequence -workload a,b,c,f,d -runs 1 -records 2500000 -ops 2500000 -duration 20s -fieldcount 10 -fieldlength 100 $C -json $R/ycsb-1k.jsonl -csv $R/ycsb-1k.csv >> $R/out-1k.txt 2>&1
log done2
