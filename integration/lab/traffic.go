package lab

import (
	"context"
	"sync"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
)

// prober makes steady short requests: a new GET / every interval, each on
// a fresh connection and in its own goroutine, so a request stuck in the
// failover does not hold back the next one (as with many independent
// clients) and the samples show both the gap and the unlucky waits.
type prober struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []Sample
}

func startProber(ctx context.Context, b *lvs.Bed, addr string, every time.Duration) *prober {
	ctx, cancel := context.WithCancel(ctx)
	p := &prober{cancel: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				start := time.Now()
				// Not ctx: a request in flight when the prober stops
				// finishes, so it is counted for what it really got.
				name, err := b.Get(context.WithoutCancel(ctx), addr)
				p.mu.Lock()
				p.samples = append(p.samples, Sample{Start: start, Took: time.Since(start), Server: name, Err: err})
				p.mu.Unlock()
			}()
		}
	}()
	return p
}

// since returns the samples of requests started at or after t so far.
func (p *prober) since(t time.Time) []Sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Sample
	for _, s := range p.samples {
		if !s.Start.Before(t) {
			out = append(out, s)
		}
	}
	return out
}

// stop ends the requests, waits for those in flight and returns every
// sample.
func (p *prober) stop() []Sample {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.samples
}

// tally counts the answers by server.
func tally(samples []Sample) map[string]int {
	out := map[string]int{}
	for _, s := range samples {
		if s.Err == nil {
			out[s.Server]++
		}
	}
	return out
}
