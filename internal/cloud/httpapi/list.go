package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
)

// LooseInt is an integer field of a provider response that some API
// generations send as a number, others as a numeric string, and others as
// null. It decodes all three (null and "" as 0) and fails only on a value
// that is no integer at all, so one API's habit does not sink a listing.
type LooseInt int64

// UnmarshalJSON accepts 22, 22.0, "22" and null.
func (n *LooseInt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*n = 0
		return nil
	}
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("decode integer: %w", err)
		}
		if s = strings.TrimSpace(s); s == "" {
			*n = 0
			return nil
		}
	}
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		*n = LooseInt(v)
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return fmt.Errorf("decode integer: %q is not an integer", s)
	}
	*n = LooseInt(f)
	return nil
}

// ForEach calls fn(ctx, i) for every i in [0, n), with at most limit calls
// running at once, and returns when all have returned. Each fn writes its
// own result slot; ForEach adds no error handling of its own, so a
// listing can keep what succeeded and report what failed.
func ForEach(ctx context.Context, n, limit int, fn func(ctx context.Context, i int)) {
	if limit < 1 {
		limit = 1
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(ctx, i)
		})
	}
	wg.Wait()
}
