// Command floor is the CPU floor of BenchmarkRotations: the requests of
// the same rotations, made by the least program that can make them. For
// each policy it generates an Ed25519 key, writes it to <prefix>/<policy>
// /pending in Vault, lists the Sesterce account (or not, on Gcore), uploads
// the public key, makes it default and lists again to check (Sesterce), then
// writes the key to <prefix>/<policy> with a check-and-set and deletes the
// pending copy: the provider and Vault requests of one rotatord rotation,
// with the same bodies, at the same concurrency (one policy at a time per
// Sesterce account, 8 in flight on the Gcore project).
//
// It uses only net/http and encoding/json, on one shared transport, and
// rotatord's own key generation (internal/keygen), so that both make the
// same keys. It keeps no journal, writes no log, audits nothing, retries
// nothing and checks only status codes: what it spends is what the
// requests and the key generation cost on this machine, below which no
// client of the same libraries goes. The benchmark divides rotatord's CPU
// by its CPU.
//
// Environment: BENCH_VAULT_TOKEN, BENCH_GCORE_KEY and BENCH_SESTERCE_KEY_%04d
// (the key of even policy i's account), as rotatord's bench configuration
// reads them.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/rotatord/rotatord/internal/keygen"
	"github.com/rotatord/rotatord/policy"
)

func main() {
	cloudURL := flag.String("cloud", "", "fakecloud's base URL")
	vaultAddr := flag.String("vault", "", "Vault's address")
	prefix := flag.String("prefix", "", "path under the secret/ mount")
	n := flag.Int("n", 1000, "policies: even ones on a Sesterce account each, odd ones on the Gcore project")
	project := flag.Int("project", 9, "the Gcore project")
	flag.Parse()
	f := &floor{
		client: &http.Client{Transport: &http.Transport{MaxConnsPerHost: 256, MaxIdleConnsPerHost: 256}, Timeout: time.Minute},
		cloud:  *cloudURL, vault: *vaultAddr + "/v1/secret", prefix: *prefix, project: *project,
		token: os.Getenv("BENCH_VAULT_TOKEN"), gcoreKey: os.Getenv("BENCH_GCORE_KEY"),
	}
	gcore := make(chan struct{}, 8)
	errs := make([]error, *n)
	var wg sync.WaitGroup
	for i := range *n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				errs[i] = f.rotate(i, os.Getenv(fmt.Sprintf("BENCH_SESTERCE_KEY_%04d", i)))
				return
			}
			gcore <- struct{}{}
			errs[i] = f.rotate(i, "")
			<-gcore
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	fmt.Printf("floor: %d rotations\n", *n)
}

type floor struct {
	client               *http.Client
	cloud, vault, prefix string
	token, gcoreKey      string
	project              int
}

// rotate does policy i's requests; sesterceKey is its account's API key,
// empty for a Gcore policy.
func (f *floor) rotate(i int, sesterceKey string) error {
	pol := fmt.Sprintf("f%04d", i)
	key, err := keygen.Generate(keygen.Spec{Type: policy.KeyEd25519}, keygen.Comment(pol))
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	name := pol + "-" + now.Format(policy.KeyNameLayout)
	data := map[string]string{
		"private_key": key.PrivateKey.Reveal(),
		"public_key":  key.PublicKey,
		"fingerprint": key.SHA256,
		"key_name":    name,
		"policy":      pol,
		"rotation_id": "r-" + name,
		"created_at":  now.Format(time.RFC3339),
	}
	path := f.prefix + "/" + pol
	if err := f.vaultWrite(path+"/pending", data, -1); err != nil {
		return err
	}
	if sesterceKey != "" {
		data["provider"] = "sesterce"
		auth := [2]string{"x-api-key", sesterceKey}
		var keys []struct {
			ID        string `json:"_id"`
			IsDefault bool   `json:"isDefault"`
		}
		if err := f.do(http.MethodGet, f.cloud+"/gpu-cloud/ssh-keys", auth, nil, &keys); err != nil {
			return err
		}
		var created struct {
			ID string `json:"_id"`
		}
		body := map[string]string{"name": name, "publicKey": data["public_key"]}
		if err := f.do(http.MethodPost, f.cloud+"/gpu-cloud/ssh-keys", auth, body, &created); err != nil {
			return err
		}
		if err := f.do(http.MethodPatch, f.cloud+"/gpu-cloud/ssh-keys/"+created.ID+"/makedefault", auth, nil, nil); err != nil {
			return err
		}
		if err := f.do(http.MethodGet, f.cloud+"/gpu-cloud/ssh-keys", auth, nil, &keys); err != nil {
			return err
		}
		data["key_id"] = created.ID
	} else {
		data["provider"], data["project_id"] = "gcore", strconv.Itoa(f.project)
		auth := [2]string{"Authorization", "APIKey " + f.gcoreKey}
		var created struct {
			ID string `json:"id"`
		}
		body := map[string]any{"name": name, "public_key": data["public_key"], "shared_in_project": false}
		if err := f.do(http.MethodPost, fmt.Sprintf("%s/cloud/v1/ssh_keys/%d", f.cloud, f.project), auth, body, &created); err != nil {
			return err
		}
		data["key_id"] = created.ID
	}
	if err := f.vaultWrite(path, data, 0); err != nil {
		return err
	}
	return f.do(http.MethodDelete, f.vault+"/metadata/"+path+"/pending", [2]string{"X-Vault-Token", f.token}, nil, nil)
}

// vaultWrite writes a KV v2 secret; cas < 0 writes without a check-and-set.
func (f *floor) vaultWrite(path string, data map[string]string, cas int) error {
	body := map[string]any{"data": data}
	if cas >= 0 {
		body["options"] = map[string]int{"cas": cas}
	}
	var answer struct {
		Data struct {
			Version int `json:"version"`
		} `json:"data"`
	}
	return f.do(http.MethodPut, f.vault+"/data/"+path, [2]string{"X-Vault-Token", f.token}, body, &answer)
}

// do sends one request with a JSON body (when body is not nil) and decodes
// a JSON answer into out (when not nil).
func (f *floor) do(method, url string, auth [2]string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set(auth[0], auth[1])
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d", method, url, resp.StatusCode)
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
