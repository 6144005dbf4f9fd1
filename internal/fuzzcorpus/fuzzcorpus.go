// Package fuzzcorpus reads Go fuzzing corpus files ("go test fuzz v1"), so that a test can use one
// fuzz target's corpus as table input for another.
package fuzzcorpus

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Read returns, for each file matching pattern (sorted by name), the values of its string and
// []byte arguments in order. Other argument types are skipped.
func Read(pattern string) ([][]string, error) {
	files, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no corpus file matches %s", pattern)
	}
	sort.Strings(files)
	out := make([][]string, 0, len(files))
	for _, name := range files {
		args, err := readFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, args)
	}
	return out, nil
}

func readFile(name string) ([]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var args []string
	lines := bufio.NewScanner(f)
	lines.Buffer(nil, 1<<20)
	for lines.Scan() {
		line := lines.Text()
		var quoted string
		switch {
		case strings.HasPrefix(line, "string(") && strings.HasSuffix(line, ")"):
			quoted = line[len("string(") : len(line)-1]
		case strings.HasPrefix(line, "[]byte(") && strings.HasSuffix(line, ")"):
			quoted = line[len("[]byte(") : len(line)-1]
		default:
			continue
		}
		v, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		args = append(args, v)
	}
	if err := lines.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return args, nil
}
