// Package proto holds Watershed's protobuf definitions (watershed/v1) and
// their generated Go code (watershedv1), regenerated with `make proto`.
package proto
