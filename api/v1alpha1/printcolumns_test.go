package v1alpha1_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/testbed"
)

// tableAccept is what kubectl sends for `kubectl get`: the API server renders the CRD's printer
// columns itself and kubectl only prints the table, so this is exactly what a user sees.
const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io"

// getTable GETs path from the test bed's API server as a meta.k8s.io/v1 Table.
func getTable(t *testing.T, path string) *metav1.Table {
	t.Helper()
	cfg := testbed.Shared().Config
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, cfg.Host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", tableAccept)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s as a Table: %s", path, resp.Status)
	}
	table := &metav1.Table{}
	if err := json.NewDecoder(resp.Body).Decode(table); err != nil {
		t.Fatalf("GET %s: not a Table: %v", path, err)
	}
	if table.Kind != "Table" {
		t.Fatalf("GET %s: the API server answered with a %q, not a Table", path, table.Kind)
	}
	return table
}

// TestPrinterColumns: `kubectl get canaries` shows Flagger's columns (NAME STATUS WEIGHT
// LASTTRANSITIONTIME), `-o wide` adds the analysis settings in between, and every cell shows the
// field its header names.
func TestPrinterColumns(t *testing.T) {
	c := apiClient(t)
	ctx := t.Context()
	ensureNamespace(t, c, "columns")
	if err := c.Create(ctx, canaryWith(t, "shown", "columns", `{interval: 1m, stepWeight: 10, maxWeight: 50}`)); err != nil {
		t.Fatal(err)
	}
	cg := &v1alpha1.Canary{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "columns", Name: "shown"}, cg); err != nil {
		t.Fatal(err)
	}
	changed := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cg.Status = v1alpha1.CanaryStatus{
		Phase:              v1alpha1.PhaseProgressing,
		CanaryWeight:       20,
		FailedChecks:       1,
		LastTransitionTime: metav1.NewTime(changed),
	}
	if err := c.Status().Update(ctx, cg); err != nil {
		t.Fatal(err)
	}

	table := getTable(t, "/apis/canarygate.io/v1alpha1/namespaces/columns/canaries/shown")

	type column struct {
		name     string
		priority int32
	}
	var got []column
	for _, col := range table.ColumnDefinitions {
		got = append(got, column{col.Name, col.Priority})
	}
	// The server puts its Name column first, then the printer columns in marker order.
	want := []column{
		{"Name", 0},
		{"STATUS", 0}, {"WEIGHT", 0},
		{"FAILEDCHECKS", 1}, {"INTERVAL", 1}, {"STEPWEIGHT", 1}, {"MAXWEIGHT", 1},
		{"LASTTRANSITIONTIME", 0},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("columns (name, priority):\n got %v\nwant %v", got, want)
	}

	// kubectl shows the priority-0 columns by default and all of them with -o wide, in table order.
	var plain, wide []string
	for _, col := range table.ColumnDefinitions {
		wide = append(wide, col.Name)
		if col.Priority == 0 {
			plain = append(plain, col.Name)
		}
	}
	if want := []string{"Name", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"}; !slices.Equal(plain, want) {
		t.Errorf("kubectl get shows %v, want %v", plain, want)
	}
	if want := []string{"Name", "STATUS", "WEIGHT", "FAILEDCHECKS", "INTERVAL", "STEPWEIGHT", "MAXWEIGHT", "LASTTRANSITIONTIME"}; !slices.Equal(wide, want) {
		t.Errorf("kubectl get -o wide shows %v, want %v", wide, want)
	}

	if len(table.Rows) != 1 {
		t.Fatalf("want one row, got %d", len(table.Rows))
	}
	cells := table.Rows[0].Cells
	if len(cells) != len(table.ColumnDefinitions) {
		t.Fatalf("%d cells for %d columns", len(cells), len(table.ColumnDefinitions))
	}
	wantCells := map[string]string{
		"Name":               "shown",
		"STATUS":             "Progressing",
		"WEIGHT":             "20",
		"FAILEDCHECKS":       "1",
		"INTERVAL":           "1m",
		"STEPWEIGHT":         "10",
		"MAXWEIGHT":          "50",
		"LASTTRANSITIONTIME": changed.Format(time.RFC3339),
	}
	for i, col := range table.ColumnDefinitions {
		if got := fmt.Sprint(cells[i]); got != wantCells[col.Name] {
			t.Errorf("%s shows %q, want %q", col.Name, got, wantCells[col.Name])
		}
	}
}
