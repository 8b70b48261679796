package daemon

import (
	"fmt"
	"os"
	"strings"

	"github.com/rotatord/rotatord/internal/secret"
)

// resolveSecret reads a credential from the environment variable env or the
// file file (exactly one is set; policy validation guarantees it). The error
// names where it looked, never what it found.
func resolveSecret(what, env, file string) (secret.Secret, error) {
	switch {
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok || strings.TrimSpace(v) == "" {
			return "", fmt.Errorf("%s: environment variable %s is not set", what, env)
		}
		return secret.Secret(strings.TrimSpace(v)), nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: read %s: %w", what, file, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%s: %s is empty", what, file)
		}
		return secret.Secret(v), nil
	}
	return "", fmt.Errorf("%s: no *_env or *_file reference configured", what)
}
