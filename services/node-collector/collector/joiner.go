package collector

import (
	"context"
	"fmt"
	"sync"
	"time"

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
// Full is maxMessageBytes, or joinSamples samples, or not room enough for
// another scrape of the size of the last one (a scrape over half the
// limits goes out at once rather than wait for a smaller one that may not
// come). joinSamples is there because the writer cannot split
// a message, so a message larger than one of its requests
// (externalServices.prometheus.queue.maxSamplesPerSend) would make its
// requests larger than configured, and its buffers with them.
//
// Order: a target's scrapes all go to its partition, and its scrape loop
// waits in Commit until the message holding a scrape is stored before it
// scrapes again, so a target's samples reach the bus in order.
//
// Memory: a scrape is compressed when it commits and joins the open
// message compressed (remotewrite.Blocks lays the snappy blocks end to
// end), so a scrape waiting for its message holds neither its builder nor
// its uncompressed bytes, and a message is compressed once, in parts,
// with no copy of its uncompressed body.

// openMessage is a bus message of one partition still taking scrapes.
type openMessage struct {
	body    *remotewrite.Blocks // scrapes' compressed WriteRequests: protobuf joins repeated fields by concatenation
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

// join adds a finished scrape (its last chunk, under maxMessageBytes) to
// the open message of its partition, and returns once that message is
// stored or failed.
func (s *sink) join(partition int, key string, c chunk) error {
	if s.linger == 0 {
		// Alone: published as compressed.
		om := &openMessage{key: key, samples: c.samples, scrapes: 1, done: make(chan struct{})}
		if s.publish(partition, om, c.payload) {
			s.recycle(c)
		}
		return om.err
	}
	j := &s.joiners[partition]
	j.mu.Lock()
	om := j.open
	if om != nil && (om.body.Len()+c.size > s.maxMessageBytes || om.samples+c.samples > s.joinSamples) {
		// No room: the open message goes now, this scrape opens the next.
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
	if err := om.body.Append(c.payload); err != nil {
		// Not a block the encoder makes: the scrape goes, not the message.
		j.mu.Unlock()
		s.metrics.samplesDropped.WithLabelValues(reasonEncodeFailed).Add(float64(c.samples))
		return fmt.Errorf("join a scrape to the message of partition %d: %w", partition, err)
	}
	om.samples += c.samples
	om.scrapes++
	// Full once another scrape like this one would not fit: waiting for
	// one that might be smaller would only delay this one.
	full := om.body.Len()+c.size > s.maxMessageBytes || om.samples+c.samples > s.joinSamples
	if full {
		j.open = nil
		om.timer.Stop()
	}
	j.mu.Unlock()
	s.recycle(c)
	if full {
		s.publishJoined(partition, om)
	}
	<-om.done
	return om.err
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
	om.body = nil
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
	if _, err := s.pub.Publish(ctx, s.message(partition, om.key, c)); err != nil {
		m.samplesDropped.WithLabelValues(reasonPublishFailed).Add(float64(om.samples))
		om.err = fmt.Errorf("publish message of %d scrapes on partition %d: %w", om.scrapes, partition, err)
		return false
	}
	m.samplesPublished.Add(float64(om.samples))
	m.messages.Inc()
	m.scrapesPerMessage.Observe(float64(om.scrapes))
	return true
}
