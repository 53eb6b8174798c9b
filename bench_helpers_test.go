package heapkv_test

import (
	"runtime"
	"time"
)

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

func nowNanos() int64 { return time.Now().UnixNano() }
