#include "textflag.h"

// func lines(b []byte)
// PRFM PLDL1KEEP of every 64-byte line from b's first byte's line to its last.
TEXT ·lines(SB), NOSPLIT, $0-24
	MOVD b_base+0(FP), R0
	MOVD b_len+8(FP), R1
	ADD  R0, R1, R2
	AND  $~63, R0
loop:
	PRFM (R0), PLDL1KEEP
	ADD  $64, R0
	CMP  R2, R0
	BLO  loop
	RET
