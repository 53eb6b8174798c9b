#include "textflag.h"

// func lines(b []byte)
// PREFETCHT0 of every 64-byte line from b's first byte's line to its last.
TEXT ·lines(SB), NOSPLIT, $0-24
	MOVQ b_base+0(FP), AX
	MOVQ b_len+8(FP), CX
	LEAQ (AX)(CX*1), DX
	ANDQ $~63, AX
loop:
	PREFETCHT0 (AX)
	ADDQ $64, AX
	CMPQ AX, DX
	JB   loop
	RET
