package logtail

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics of the log path, by kind of source ("pod", "file" or "journal"); no series
// per file, so nothing grows with the files a node sees.
type metrics struct {
	lines          *prometheus.CounterVec
	bytesRead      *prometheus.CounterVec
	truncated      *prometheus.CounterVec
	invalidUTF8    *prometheus.CounterVec
	parseErrors    *prometheus.CounterVec
	readErrors     *prometheus.CounterVec
	rotations      *prometheus.CounterVec
	released       *prometheus.CounterVec
	filesTailed    *prometheus.GaugeVec
	positionWrites prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		lines: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_logs_lines_total",
			Help: "Log entries published to the bus and acknowledged, by kind of source.",
		}, []string{"kind"}),
		bytesRead: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_logs_read_bytes_total",
			Help: "File bytes whose lines were acknowledged by the bus (the positions' advance), by kind of source.",
		}, []string{"kind"}),
		truncated: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_logs_lines_truncated_total",
			Help: "Entries longer than logs.tail.maxLineSize, sent truncated, by kind of source.",
		}, []string{"kind"}),
		invalidUTF8: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_logs_lines_invalid_utf8_total",
			Help: "Entries with invalid UTF-8, sent with U+FFFD in its place, by kind of source.",
		}, []string{"kind"}),
		parseErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_logs_parse_errors_total",
			Help: "Lines not in their file's runtime format, sent whole with the time they were read, by kind of source.",
		}, []string{"kind"}),
		readErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_logs_read_errors_total",
			Help: "Failed reads or publishes of a file, retried at the next poll, by kind of source.",
		}, []string{"kind"}),
		rotations: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_logs_rotations_total",
			Help: "Rotations seen, by kind of source and outcome: renamed, renamed_between_polls, copytruncate, renamed_while_down; copytruncate_no_copy and rotated_away_while_down may have lost lines.",
		}, []string{"kind", "outcome"}),
		released: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_logs_files_released_total",
			Help: "Deleted files read to their end and closed, by kind of source.",
		}, []string{"kind"}),
		filesTailed: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "watershed_logs_files_tailed",
			Help: "Files being tailed, by kind of source.",
		}, []string{"kind"}),
		positionWrites: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_logs_position_writes_total",
			Help: "Writes of the positions file (each covers every change before it).",
		}),
	}
	for _, kind := range []string{"pod", "file", "journal"} {
		for _, c := range []*prometheus.CounterVec{m.lines, m.bytesRead, m.truncated, m.invalidUTF8, m.parseErrors, m.readErrors, m.released} {
			c.WithLabelValues(kind)
		}
		m.filesTailed.WithLabelValues(kind)
	}
	return m
}
