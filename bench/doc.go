// Package bench holds rotatord's whole-system benchmarks and soak test.
// They run the real binaries (rotatord, fakecloud) against a real Vault dev
// server, print their figures, and never assert a time:
//
//	make bench-rotations   1,000 policies vs the critical-path bound, and vs a hand-written script
//	make soak              500 policies through provider faults and two SIGKILLs
//
// The soak test also runs, shortened, in `make test`.
package bench
