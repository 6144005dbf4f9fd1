package admission

import "testing"

func TestParseGoBench(t *testing.T) {
	out := []byte(`goos: linux
BenchmarkMutateDivert-2   	   50000	     21000 ns/op	 250.1 MB/s	    4100 B/op	      40 allocs/op
BenchmarkMutateDivert-2   	   50000	     20000 ns/op	 260.0 MB/s	    4000 B/op	      40 allocs/op
BenchmarkMutateDivert-2   	   50000	     90000 ns/op	 60.0 MB/s	    4000 B/op	      40 allocs/op
BenchmarkValidateUnchanged 	  100000	      9000 ns/op	    1000 B/op	      10 allocs/op
PASS
`)
	got, err := ParseGoBench(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []GoBench{
		{Name: "MutateDivert", Runs: 3, NsPerOp: 21000, BytesPerOp: 4000, AllocsPerOp: 40},
		{Name: "ValidateUnchanged", Runs: 1, NsPerOp: 9000, BytesPerOp: 1000, AllocsPerOp: 10},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("benchmark %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := ParseGoBench([]byte("PASS\n")); err == nil {
		t.Error("output without benchmarks parsed without error")
	}
}
