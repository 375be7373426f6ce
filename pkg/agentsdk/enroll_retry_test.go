package agentsdk

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// An enrollment whose answer is lost is retried with the same proposed
// credential (saved in the state directory before it was sent); a refused one
// is retried with a new one.
func TestEnrollRetryProposesTheSameCredential(t *testing.T) {
	var mu sync.Mutex
	var proposals []string
	answer := []int{0, http.StatusConflict, http.StatusCreated} // 0: drop the connection
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req enrollRequest
		require.NoError(t, json.NewDecoder(r.Body).Decode(&req))
		mu.Lock()
		n := len(proposals)
		proposals = append(proposals, req.Credential)
		mu.Unlock()
		switch answer[min(n, len(answer)-1)] {
		case 0:
			conn, _, err := w.(http.Hijacker).Hijack()
			require.NoError(t, err)
			_ = conn.Close()
		case http.StatusConflict:
			http.Error(w, `{"status":409}`, http.StatusConflict)
		default:
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(enrollResponse{AgentID: req.AgentID, Credential: req.Credential})
		}
	}))
	defer srv.Close()
	dir := filepath.Join(t.TempDir(), "state")
	a, err := New(Config{URL: strings.Replace(srv.URL, "http", "ws", 1) + "/ws/agent", AgentID: "a1", EnrollmentSecret: "s",
		StateDir: dir, InsecureSkipVerify: true, HandshakeTimeout: 2 * time.Second})
	require.NoError(t, err)
	ctx := context.Background()

	_, err = a.enroll(ctx) // connection dropped: outcome unknown
	require.Error(t, err)
	saved, err := os.ReadFile(filepath.Join(dir, stateCredentialFile))
	require.NoError(t, err)
	require.Equal(t, proposals[0]+"\n", string(saved), "saved before it was sent")
	_, err = a.enroll(ctx) // the retry proposes the same; refused
	require.Error(t, err)
	cred, err := a.enroll(ctx) // after a refusal: a new proposal
	require.NoError(t, err)

	require.Len(t, proposals, 3)
	require.Len(t, proposals[0], 43)
	require.Equal(t, proposals[0], proposals[1], "a retry after a lost answer proposes the same credential")
	require.NotEqual(t, proposals[1], proposals[2], "after a refusal, another")
	require.Equal(t, proposals[2], cred)
}
