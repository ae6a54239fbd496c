package collector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// Scrapes of one partition share bus messages. Every bus message costs the
// same on each hop whatever its size (stored, delivered, acked, removed
// from the raw work queue, and again on the destination stream), so many
// small targets cost mostly messages: at 200 scrapes a second of 1,000
// series, the bus spent more on them than on their bytes. A finished
// scrape joins the open message of its partition and waits for it to be
// stored; the message goes out when it is full or batchLinger after its
// first scrape, so the bus carries at most partitions/linger messages a
// second plus one per full message, however many targets there are.
//
// A scrape is cut into chunks of an eighth of the limits (maxMessageBytes,
// and joinSamples, the writer's maxSamplesPerSend), each compressed on its
// own, and its chunks join the open message in order; a chunk without room
// sends the open message out and opens the next, so one scrape may span
// two messages. A message goes out once it cannot take another chunk:
// messages fill to within an eighth of maxMessageBytes.
//
// A message may hold many times maxSamplesPerSend: it names its chunks in
// its Ws-Chunks header, and the writer cuts it into requests where chunks
// met (remotewrite.SplitBlock), so its requests stay within
// maxSamplesPerSend. Capping messages at maxSamplesPerSend instead, at 200
// targets of 1,000 series a message held one or two scrapes, and the bus
// carried twice the messages the linger alone would make.
//
// A scrape of more than joinSamples goes alone, in messages of up to
// maxMessageBytes whose chunks are cut at that size, as before messages
// were cut: the writer sends each such chunk as one request, larger than
// maxSamplesPerSend (cutting it in chunks of maxSamplesPerSend is possible
// now, at the cost of more, smaller requests; not measured yet).

// Order: a target's scrapes all go to its partition, and its scrape loop
// waits in Commit until the messages holding a scrape are stored before it
// scrapes again, so a target's samples reach the bus in order. The two
// messages a scrape may span hold different series of it, so their order
// does not matter.
//
// Memory: a scrape is compressed when it commits and joins the open
// message compressed (remotewrite.Blocks lays the snappy blocks end to
// end), so a scrape waiting for its message holds neither its builder nor
// its uncompressed bytes, and a message is compressed once, in parts,
// with no copy of its uncompressed body.

// openMessage is a bus message of one partition still taking scrapes.
type openMessage struct {
	body    *remotewrite.Blocks // scrapes' compressed WriteRequests: protobuf joins repeated fields by concatenation
	chunks  []remotewrite.Chunk // of body, in order: its Ws-Chunks header
	key     string              // partition key of the first scrape
	samples int
	scrapes int
	timer   *time.Timer // publishes it batchLinger after the first scrape
	done    chan struct{}
	err     error // set before done is closed
}

// partitionJoiner holds the open message of one partition.
type partitionJoiner struct {
	mu   sync.Mutex
	open *openMessage
}

// join adds the chunks of a finished scrape, in order, to the open
// messages of its partition, and returns once the messages holding them
// are stored or failed.
func (s *sink) join(partition int, key string, chunks []chunk) error {
	j := &s.joiners[partition]
	var held []*openMessage // the messages holding this scrape, in order
	var errs []error
	j.mu.Lock()
	for _, c := range chunks {
		om := j.open
		if om != nil && !s.hasRoom(om, c.size) {
			// The open message goes now; this chunk opens the next.
			j.open = nil
			om.timer.Stop()
			go s.publishJoined(partition, om)
			om = nil
		}
		if om == nil {
			om = &openMessage{body: s.bodies.Get().(*remotewrite.Blocks), key: key, done: make(chan struct{})}
			om.body.Reset()
			j.open = om
			om.timer = time.AfterFunc(s.linger, func() { s.lingerEnded(partition, om) })
		}
		if err := om.appendChunk(c); err != nil {
			// Not a block the encoder makes: the chunk goes, not the message.
			s.metrics.samplesDropped.WithLabelValues(reasonEncodeFailed).Add(float64(c.samples))
			errs = append(errs, fmt.Errorf("join a scrape to the message of partition %d: %w", partition, err))
			continue
		}
		om.samples += c.samples
		if len(held) == 0 || held[len(held)-1] != om {
			om.scrapes++
			held = append(held, om)
		}
	}
	// Full once another chunk would not fit: waiting for a smaller one
	// would only delay the scrapes it holds.
	om := j.open
	full := om != nil && s.isFull(om)
	if full {
		j.open = nil
		om.timer.Stop()
	}
	j.mu.Unlock()
	for _, c := range chunks {
		s.recycle(c)
	}
	if full {
		s.publishJoined(partition, om)
	}
	for _, om := range held {
		<-om.done
		if om.err != nil {
			errs = append(errs, om.err)
		}
	}
	return errors.Join(errs...)
}

// maxChunksPerMessage bounds a message's chunk table (about 20 bytes a
// chunk in its header): scrapes of a few series are a chunk each.
const maxChunksPerMessage = 256

// appendChunk joins a chunk's block to the message and its table.
func (om *openMessage) appendChunk(c chunk) error {
	entry, err := remotewrite.ChunkOf(c.payload, c.samples)
	if err != nil {
		return err
	}
	if err := om.body.Append(c.payload); err != nil {
		return err
	}
	om.chunks = append(om.chunks, entry)
	return nil
}

// hasRoom tells whether om can take a chunk of size bytes uncompressed.
func (s *sink) hasRoom(om *openMessage, size int) bool {
	return om.body.Len()+size <= s.maxMessageBytes && len(om.chunks) < maxChunksPerMessage
}

// isFull tells whether om has no room for a chunk of the largest size.
func (s *sink) isFull(om *openMessage) bool {
	return om.body.Len()+s.chunkBytes > s.maxMessageBytes || len(om.chunks) >= maxChunksPerMessage
}

// publishAlone publishes a scrape in messages of its own, in order: its
// chunks joined up to each that ends a message (cut by the appender at
// maxMessageBytes). The first failure counts the rest of the scrape as
// dropped.
func (s *sink) publishAlone(partition int, key string, chunks []chunk) error {
	for len(chunks) > 0 {
		n := 1
		for n < len(chunks) && !chunks[n-1].endsMessage {
			n++
		}
		om := &openMessage{key: key, scrapes: 1, done: make(chan struct{})}
		var err error
		if n == 1 {
			om.samples = chunks[0].samples
			if s.publish(partition, om, chunks[0].payload) {
				s.recycle(chunks[0])
			}
		} else {
			err = s.publishJoinedChunks(partition, om, chunks[:n])
		}
		if err = errors.Join(err, om.err); err != nil {
			lost := 0
			for _, c := range chunks[n:] {
				lost += c.samples
			}
			s.metrics.samplesDropped.WithLabelValues(reasonPublishFailed).Add(float64(lost))
			return err
		}
		chunks = chunks[n:]
	}
	return nil
}

// publishJoinedChunks publishes chunks joined into one message.
func (s *sink) publishJoinedChunks(partition int, om *openMessage, chunks []chunk) error {
	om.body = s.bodies.Get().(*remotewrite.Blocks)
	om.body.Reset()
	for _, c := range chunks {
		om.samples += c.samples
	}
	for _, c := range chunks {
		if err := om.appendChunk(c); err != nil {
			s.bodies.Put(om.body)
			s.metrics.samplesDropped.WithLabelValues(reasonEncodeFailed).Add(float64(om.samples))
			close(om.done)
			return fmt.Errorf("join the chunks of a scrape on partition %d: %w", partition, err)
		}
	}
	for _, c := range chunks {
		s.recycle(c) // copied into the body
	}
	s.publishJoined(partition, om)
	return nil
}

// lingerEnded publishes a message its scrapes have waited batchLinger for,
// unless it went out already because it was full.
func (s *sink) lingerEnded(partition int, om *openMessage) {
	j := &s.joiners[partition]
	j.mu.Lock()
	mine := j.open == om
	if mine {
		j.open = nil
	}
	j.mu.Unlock()
	if mine {
		s.publishJoined(partition, om)
	}
}

// publishJoined publishes a joined message and gives its body back once
// acked.
func (s *sink) publishJoined(partition int, om *openMessage) {
	if s.publish(partition, om, om.body.Bytes()) {
		s.bodies.Put(om.body)
	}
	om.body, om.chunks = nil, nil
}

// publish publishes a message's compressed payload, counts what it held,
// and releases the scrapes waiting for it. It reports whether JetStream
// acked it: only then does the client hold no reference to the payload.
func (s *sink) publish(partition int, om *openMessage, payload []byte) (acked bool) {
	defer close(om.done)
	m := s.metrics
	c := chunk{payload: payload, samples: om.samples}
	ctx, cancel := context.WithTimeout(s.ctx, s.publishTimeout)
	defer cancel()
	msg := s.message(partition, om.key, c)
	if len(om.chunks) > 1 {
		msg.Header.Set(bus.HeaderChunks, remotewrite.FormatChunkTable(om.chunks))
	}
	if _, err := s.pub.Publish(ctx, msg); err != nil {
		m.samplesDropped.WithLabelValues(reasonPublishFailed).Add(float64(om.samples))
		om.err = fmt.Errorf("publish message of %d scrapes on partition %d: %w", om.scrapes, partition, err)
		return false
	}
	m.samplesPublished.Add(float64(om.samples))
	m.messages.Inc()
	m.scrapesPerMessage.Observe(float64(om.scrapes))
	return true
}
