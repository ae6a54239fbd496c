// Package logtail is the node collector's log path: it tails the kubelet's
// pod log files (and, in local mode, the files of logs.files), parses the
// container runtime formats (CRI and Docker json-file), and publishes each
// batch of lines to the bus as a Loki push request.
//
// A file's position (device, inode and byte offset) advances only after
// JetStream acknowledged the message that carried its lines, and is kept in
// a positions file on the node. Before a batch is published, its byte range
// is written there too, with the message id it derives from; a collector
// killed between the publish and the position update sends exactly that
// range again under the same id, and JetStream's duplicate window drops it.
// So a crash loses no line and doubles none.
//
// Rotation: a renamed file is drained through the descriptor still open
// before the new file is read (after a restart, the renamed file is found
// again by its inode); a truncated file (copytruncate) is recognised by its
// size, and the lines between the position and the truncation are read
// from the copy beside it when its bytes match what was read last.
package logtail
