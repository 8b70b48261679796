//go:build cpuprofile

package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// startCPUProfile is built only into the benchmark's binary (go build -tags
// cpuprofile): ROTATORD_CPUPROFILE=FILE profiles the whole command into
// FILE, for `go tool pprof`. The release binary ignores the variable
// (cpuprofile.go).
func startCPUProfile(stderr io.Writer) (stop func()) {
	path := os.Getenv("ROTATORD_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "rotatord: cpu profile: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "rotatord: cpu profile: %v\n", err)
		}
	}
}
