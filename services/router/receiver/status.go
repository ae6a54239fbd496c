package receiver

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// httpStatus maps a pipeline error to the HTTP answer the OTLP
// specification prescribes: 400 for data that will never be accepted, 413
// for a body over the limit, 503 with Retry-After for what the client
// should send again.
func httpStatus(err error) (code int, retryAfter time.Duration) {
	var over *OverloadedError
	switch {
	case errors.As(err, &over):
		return http.StatusServiceUnavailable, over.RetryAfter
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, 0
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest, 0
	default:
		return http.StatusServiceUnavailable, time.Second
	}
}

// setRetryAfter writes a Retry-After header in whole seconds.
func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	if d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	}
}

// grpcStatus maps a pipeline error to a gRPC status: INVALID_ARGUMENT for
// data that will never be accepted, RESOURCE_EXHAUSTED with RetryInfo when
// the memory limiter refuses (the OTLP way of saying "retry later"),
// UNAVAILABLE when the bus could not store the data in time.
func grpcStatus(err error) error {
	var over *OverloadedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &over):
		st := status.New(codes.ResourceExhausted, err.Error())
		if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(over.RetryAfter)}); derr == nil {
			st = d
		}
		return st.Err()
	case errors.Is(err, ErrTooLarge):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	default:
		return status.Error(codes.Unavailable, err.Error())
	}
}
