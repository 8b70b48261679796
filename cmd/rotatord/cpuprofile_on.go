//go:build cpuprofile

package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// startCPUProfile is built only into the benchmark's binary (go build -tags
// cpuprofile): ROTATORD_CPUPROFILE=FILE profiles the whole command's CPU
// into FILE, and ROTATORD_MEMPROFILE=FILE writes its allocations there at
// the end, for `go tool pprof`. The release binary ignores both variables
// (cpuprofile.go).
func startCPUProfile(stderr io.Writer) (stop func()) {
	stopCPU := func() {}
	if path := os.Getenv("ROTATORD_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(stderr, "rotatord: cpu profile: %v\n", err)
		} else {
			stopCPU = func() {
				pprof.StopCPUProfile()
				if err := f.Close(); err != nil {
					fmt.Fprintf(stderr, "rotatord: cpu profile: %v\n", err)
				}
			}
		}
	}
	return func() {
		stopCPU()
		if path := os.Getenv("ROTATORD_MEMPROFILE"); path != "" {
			if err := writeAllocs(path); err != nil {
				fmt.Fprintf(stderr, "rotatord: allocation profile: %v\n", err)
			}
		}
	}
}

func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
