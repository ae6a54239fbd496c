package tempowriter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/grpcgzip"
	"github.com/watershed-dev/watershed/platform/httpwriter"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// exportMethod is the OTLP trace service's one RPC.
const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// rawCodec passes encoded requests through and keeps the encoded
// response: the joined payloads already are an ExportTraceServiceRequest.
// Its name is "proto" so that the content type stays application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// grpcSender exports with OTLP gRPC.
type grpcSender struct {
	conn    *grpc.ClientConn
	md      metadata.MD
	opts    []grpc.CallOption
	timeout time.Duration
}

func newGRPCSender(t config.TempoConfig) (*grpcSender, error) {
	creds := insecure.NewCredentials()
	if !t.Plaintext() {
		tc, err := tlsConfig(t.TLS)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	// NewClient connects lazily: a Tempo that is down at start-up is one
	// more retryable answer, not a start-up failure.
	conn, err := grpc.NewClient(t.GRPCTarget(), grpc.WithTransportCredentials(creds), grpc.WithUserAgent(UserAgent))
	if err != nil {
		return nil, fmt.Errorf("externalServices.tempo.host %q: %w", t.Host, err)
	}
	s := &grpcSender{conn: conn, md: metadata.MD{}, timeout: t.Queue.RemoteTimeout, opts: []grpc.CallOption{grpc.ForceCodec(rawCodec{})}}
	if a := authorization(t); a != "" {
		s.md.Set("authorization", a)
	}
	if t.Compression == "gzip" {
		s.opts = append(s.opts, grpc.UseCompressor(grpcgzip.Name))
	}
	return s, nil
}

// Send exports the joined request as it is.
func (s *grpcSender) Send(ctx context.Context, tenant string, req *remotewrite.Joiner) (httpwriter.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	md := s.md
	if tenant != "" {
		md = md.Copy()
		md.Set("x-scope-orgid", tenant)
	}
	ctx = metadata.NewOutgoingContext(ctx, md)
	body := req.Uncompressed()
	var resp []byte
	if err := s.conn.Invoke(ctx, exportMethod, &body, &resp, s.opts...); err != nil {
		return httpwriter.Result{}, classifyGRPC(err)
	}
	return partialSuccess(resp, len(body))
}

// partialSuccess reads the spans an accepted export rejected.
func partialSuccess(resp []byte, sent int) (httpwriter.Result, error) {
	res := httpwriter.Result{Bytes: sent}
	if len(resp) == 0 {
		return res, nil
	}
	r := ptraceotlp.NewExportResponse()
	if err := r.UnmarshalProto(resp); err != nil {
		// The spans were accepted; only the detail is unreadable.
		return res, nil
	}
	if ps := r.PartialSuccess(); ps.RejectedSpans() > 0 {
		res.Rejected = int(ps.RejectedSpans())
		res.RejectReason = "partial_success"
		res.Message = ps.ErrorMessage()
	}
	return res, nil
}

// classifyGRPC maps a failed export to what the writer does with it.
func classifyGRPC(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return &httpwriter.SendError{Class: httpwriter.Retryable, Reason: "connection", Err: err}
	}
	reason := snake(st.Code().String())
	switch st.Code() {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange, codes.DataLoss:
		if st.Code() == codes.DeadlineExceeded {
			reason = "timeout"
		}
		return &httpwriter.SendError{Class: httpwriter.Retryable, Reason: reason, Err: err}
	case codes.Unauthenticated, codes.PermissionDenied:
		// As for the HTTP writers: credentials get fixed, the spans wait.
		return &httpwriter.SendError{Class: httpwriter.Retryable, Reason: "unauthorized", Err: err}
	case codes.ResourceExhausted:
		if d, ok := retryDelay(st); ok {
			return &httpwriter.SendError{Class: httpwriter.Throttled, Reason: "throttled", RetryAfter: d, Err: err}
		}
		return &httpwriter.SendError{Class: httpwriter.Permanent, Reason: reason, Err: err}
	}
	return &httpwriter.SendError{Class: httpwriter.Permanent, Reason: reason, Err: err}
}

// snake turns a gRPC code name (InvalidArgument) into a label value
// (invalid_argument).
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// retryDelay is the RetryInfo a status carries.
func retryDelay(st *status.Status) (time.Duration, bool) {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// Close releases the connection.
func (s *grpcSender) Close() error { return errors.Join(s.conn.Close()) }
