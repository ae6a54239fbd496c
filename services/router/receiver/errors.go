package receiver

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors of the pipeline; each protocol maps them to its own
// status codes (see status.go).
var (
	// ErrInvalid marks a request that will never be accepted: malformed,
	// over a limit, or unsupported. HTTP 400, gRPC INVALID_ARGUMENT.
	ErrInvalid = errors.New("invalid request")
	// ErrTooLarge marks a request body over receivers.limits.maxRequestSize.
	// HTTP 413, gRPC RESOURCE_EXHAUSTED without a retry hint.
	ErrTooLarge = errors.New("request too large")
	// ErrUnavailable marks a request the bus could not store in time; the
	// client should retry. HTTP 503, gRPC UNAVAILABLE.
	ErrUnavailable = errors.New("buffer unavailable")
)

// OverloadedError is the memory limiter's refusal: retry after RetryAfter.
// HTTP 503 with Retry-After, gRPC RESOURCE_EXHAUSTED with RetryInfo.
type OverloadedError struct {
	RetryAfter time.Duration
}

func (e *OverloadedError) Error() string {
	return fmt.Sprintf("memory limit reached, retry after %s", e.RetryAfter)
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// reasonOf is the bounded metric label of a refusal.
func reasonOf(err error) string {
	var over *OverloadedError
	switch {
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.As(err, &over):
		return "memory_limit"
	case errors.Is(err, ErrUnavailable):
		return "bus_unavailable"
	}
	return "other"
}
