/*
Copyright 2026 The tokenstore Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Package crd carries the CustomResourceDefinitions that controller-gen
// generates into bases/, compiled into the binary. The file source validates
// TokenProvider manifests against exactly the schema the API server enforces,
// so the generated YAML is the single source of those rules: nothing here is
// written by hand, and `make manifests` refreshes both at once.
package crd

import "embed"

// bases holds the generated CRD manifests.
//
//go:embed bases/*.yaml
var bases embed.FS

// TokenProvidersFile is the CRD of tokenproviders.tokenstore.io inside Files.
const TokenProvidersFile = "bases/tokenstore.io_tokenproviders.yaml"

// Files returns the generated CRD manifests, one per file under bases/.
func Files() embed.FS { return bases }

// TokenProviders returns the generated CRD of tokenproviders.tokenstore.io.
func TokenProviders() []byte {
	b, err := bases.ReadFile(TokenProvidersFile)
	if err != nil {
		// The embed pattern is checked at build time, but a renamed file
		// would only show here; returning nil lets the caller report it.
		return nil
	}
	return b
}
