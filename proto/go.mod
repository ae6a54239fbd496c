module github.com/watershed-dev/watershed/proto

go 1.26.7

require google.golang.org/protobuf v1.36.12
