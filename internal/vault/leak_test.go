package vault_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/internal/vault"
	"github.com/rotatord/rotatord/internal/vault/vaulttest"
)

// TestStore_LeaksNoSecret runs a day's worth of successes and failures
// (denied paths, CAS conflicts, refused logins, a sealed and then a stopped
// Vault) and fails if the root token, the AppRole secret_id or a stored
// private key shows up in any error or any log line at debug level.
func TestStore_LeaksNoSecret(t *testing.T) {
	srv := vaulttest.Start(t)
	roleID, secretID := srv.EnableAppRole(t, examplePolicy(t))
	const privateKey = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n"
	data := map[string]string{"private_key": privateKey, "fingerprint": "SHA256:abc"}
	secrets := map[string]string{
		"root token":      srv.RootToken.Reveal(),
		"secret_id":       secretID,
		"private key":     privateKey,
		"private key row": "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
	}

	var logs syncBuffer
	log := debugLogger(&logs)
	var errs []error
	record := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	ctx := context.Background()
	cfg := func(auth vault.Auth) vault.Config {
		return vault.Config{Address: srv.Addr, Mount: vaulttest.Mount, Auth: auth, Logger: log,
			Timeout: 2 * time.Second, MaxRetries: -1}
	}

	// A login with a wrong secret_id, then a good one.
	_, err := vault.New(ctx, cfg(vault.Auth{AppRole: &vault.AppRole{RoleID: secret.Secret(roleID), SecretID: secret.Secret(secretID + "x")}}))
	record(err)
	app, err := vault.New(ctx, cfg(vault.Auth{AppRole: &vault.AppRole{RoleID: secret.Secret(roleID), SecretID: secret.Secret(secretID)}}))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	root, err := vault.New(ctx, cfg(vault.Auth{Token: srv.RootToken}))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()

	for _, s := range []*vault.Store{app, root} {
		_, err = s.Put(ctx, "ssh/leak/key", data, vault.NoCAS)
		record(err)
		_, err = s.Put(ctx, "ssh/leak/key", data, 0) // CAS conflict
		record(err)
		_, err = s.Put(ctx, "outside/key", data, vault.NoCAS) // denied for AppRole
		record(err)
		_, _, err = s.Get(ctx, "ssh/leak/key")
		record(err)
		_, err = s.GetVersion(ctx, "ssh/leak/key", 99)
		record(err)
		record(s.Check(ctx))
	}
	srv.Seal(t)
	_, err = root.Put(ctx, "ssh/leak/key", data, vault.NoCAS)
	record(err)
	record(app.Check(ctx))
	srv.Stop()
	_, err = app.Put(ctx, "ssh/leak/key", data, vault.NoCAS)
	record(err)
	record(root.Delete(ctx, "ssh/leak/key"))
	app.Close()
	root.Close()

	if len(errs) < 10 {
		t.Fatalf("only %d errors were provoked; the test exercises too little", len(errs))
	}
	var out strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&out, "%v\n%+v\n%#v\n", e, e, e)
	}
	out.WriteString(logs.String())
	if !strings.Contains(logs.String(), `"level":"DEBUG"`) {
		t.Fatalf("no debug lines were logged; the test exercises too little:\n%s", logs.String())
	}
	for name, v := range secrets {
		if strings.Contains(out.String(), v) {
			t.Errorf("the %s leaked into errors or logs:\n%s", name, out.String())
		}
	}
}
