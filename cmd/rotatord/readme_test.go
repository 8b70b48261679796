package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Every ROTATORD_* environment variable the code or a script reads is in
// the README's table: an operator or a newcomer should never have to read
// source to find a knob (or the test hook that the release build ignores).
func TestReadme_documentsEveryEnvironmentVariable(t *testing.T) {
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`ROTATORD_[A-Z0-9_]*[A-Z0-9]`)
	used := map[string]string{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "tmp", "bin", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, ".sh") && d.Name() != "Makefile" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, v := range name.FindAllString(string(b), -1) {
			if _, ok := used[v]; !ok {
				used[v] = path
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(used) < 5 {
		t.Fatalf("found only %d variables: the walk missed the tree", len(used))
	}
	documented := name.FindAllString(string(readme), -1)
	for v, where := range used {
		if !slices.Contains(documented, v) {
			t.Errorf("%s (read in %s) is not in the README's environment table", v, where)
		}
	}
}
