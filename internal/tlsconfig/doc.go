// Package tlsconfig builds TLS and mutual-TLS configurations for tfgate's gRPC
// servers and clients from PEM files, and reloads them when the files change.
//
// A [Source] loads a certificate/key pair and an optional CA bundle. A server's
// tls.Config (from [Source.ServerTLS]) picks them per handshake through
// GetConfigForClient; a client's (from [Source.ClientTLS]) through
// GetClientCertificate and a VerifyConnection that checks the server against
// the current CA bundle. So a rotated certificate, key or CA takes effect on the
// next handshake, without a restart; connections already open keep the
// certificate they were made with.
//
// Invariants:
//   - Insecure (plaintext) only when Config.Insecure says so; a server with no
//     certificate and no Insecure is a configuration error, and a client
//     without Insecure always verifies the server (system roots unless CAFile).
//   - A reload that fails (a half-written file, a key that does not match its
//     certificate, a CA file with no certificates) keeps the last good material
//     serving; the failure is logged and counted, and retried on the next check.
//   - Client certificates, when required, must chain to CAFile; with
//     AllowedSubjects set, the leaf's subject DN, common name, DNS name, URI or
//     email SAN must be on the list, else the handshake fails with
//     bad_certificate and the server logs which subject was refused.
//
// Files are checked at most once per Config.ReloadInterval, lazily on the
// handshake path (a stat-free read and SHA-256 of three small files) and, when
// the owner runs [Source.Run], on a timer too, so failures are reported even
// when no one connects. [Source.Reload] forces a check: gateway.Run calls it on
// every SIGHUP for the listener's and the backends' sources, together with the
// routing config reload.
//
// Concurrency: a Source is safe for concurrent use; the tls.Configs it returns
// may be shared by any number of listeners and dialers.
package tlsconfig
