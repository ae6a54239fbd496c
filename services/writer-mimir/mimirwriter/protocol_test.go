package mimirwriter

import "testing"

func TestRejectReason(t *testing.T) {
	for _, c := range []struct {
		status int
		body   string
		want   string
	}{
		{400, "out of order sample", "out_of_order"},
		{400, "err-mimir-sample-too-old: the sample is too far in the past", "too_old"},
		{400, "out of bounds", "too_old"},
		{400, "sample too far in the future", "too_new"},
		{400, "duplicate sample for timestamp", "duplicate_timestamp"},
		{400, "received a series with an invalid label: '0x'", "invalid_labels"},
		{400, "per-user series limit of 150000 exceeded", "limits"},
		{413, "request body too large", "too_large"},
		{400, "something new", ""},
	} {
		t.Run(c.want+"/"+c.body, func(t *testing.T) {
			if got := rejectReason(c.status, c.body); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}
