package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// TestFleetIsLikeARealOne generates a fleet and checks the shares the benchmark promises: most
// devices escrowed, every problem present, one in five with a data drive, owners with several
// devices and devices with none, and the same fleet from the same seed.
func TestFleetIsLikeARealOne(t *testing.T) {
	const n = 20000
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	f := newFleet(1, 0, now)
	kindsSeen := map[string]int{}
	perOwner := map[string]int{}
	data, noOwner, keys := 0, 0, map[string]bool{}
	for i := range n {
		d, kind := f.device(i)
		kindsSeen[kind]++
		if d.OwnerUPN == "" {
			noOwner++
		}
		perOwner[strings.ToLower(d.OwnerUPN)]++
		if len(d.Volumes) > 1 {
			data++
			if d.Volumes[1].Type != escrow.VolumeFixedData {
				t.Fatalf("second volume %+v", d.Volumes[1])
			}
		}
		for _, v := range d.Volumes {
			for _, k := range v.Keys {
				if keys[k.KeyID] {
					t.Fatalf("key ID %s twice", k.KeyID)
				}
				keys[k.KeyID] = true
				if k.Superseded && !k.RetainUntil.After(now) {
					t.Errorf("superseded key past its retention: %+v", k)
				}
			}
		}
		if !d.ReportedAt.IsZero() && d.ReportedAt.Before(d.EnrolledAt) {
			t.Errorf("%s reported before it enrolled", d.Name)
		}
	}
	share := func(k int) float64 { return float64(k) / n }
	if s := share(kindsSeen["escrowed"]); s < 0.8 || s > 0.9 {
		t.Errorf("%.2f escrowed, want about 0.85", s)
	}
	for _, k := range kinds {
		if kindsSeen[k.kind] == 0 {
			t.Errorf("no device %s", k.kind)
		}
	}
	if s := share(data); s < 0.17 || s > 0.23 {
		t.Errorf("%.2f with a data drive, want about 0.2", s)
	}
	if s := share(noOwner); s < 0.02 || s > 0.04 {
		t.Errorf("%.3f without an owner, want about 0.03", s)
	}
	shared, many := 0, 0
	for o, c := range perOwner {
		if o != "" && c > 1 {
			shared++
		}
		if o != "" && c > 5 {
			many++
		}
	}
	if shared < n/20 || many == 0 {
		t.Errorf("%d owners with several devices, %d with more than 5: owners are not shared like real people's", shared, many)
	}

	a, _ := newFleet(7, 100, now).device(100)
	b, _ := newFleet(7, 100, now).device(100)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("the same seed gave different devices")
	}
}
