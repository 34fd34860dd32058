package nkv_test

import (
	"os"
	"strings"
	"testing"
)

// Every Go block of bindings/go/README.md and of the top-level README.md
// quotes an example that runs (example_test.go), line for line, ignoring
// indentation and blank lines.
func TestReadmeQuotesTestedExamples(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	examples := normalize(string(src))
	total := 0
	for _, readme := range []string{"../README.md", "../../../README.md"} {
		text, err := os.ReadFile(readme)
		if err != nil {
			t.Fatal(err)
		}
		for _, block := range goBlocks(string(text)) {
			total++
			if !containsRun(examples, normalize(block)) {
				t.Errorf("%s: this Go block is not quoted from example_test.go:\n%s", readme, block)
			}
		}
	}
	if total < 4 {
		t.Fatalf("only %d Go blocks in the READMEs", total)
	}
}

func goBlocks(text string) []string {
	var blocks []string
	var cur []string
	inside := false
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			if inside {
				blocks = append(blocks, strings.Join(cur, "\n"))
				inside = false
			} else if trimmed == "```go" {
				inside, cur = true, nil
			}
			continue
		}
		if inside {
			cur = append(cur, line)
		}
	}
	return blocks
}

func normalize(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if l := strings.TrimSpace(line); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func containsRun(haystack, needle []string) bool {
	if len(needle) == 0 {
		return false
	}
	for i := 0; i+len(needle) <= len(haystack); i++ {
		match := true
		for j := range needle {
			if haystack[i+j] != needle[j] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}
