// Package packaging holds what deploys Krill rather than what Krill is:
// the example production configuration (krill.toml), the systemd unit
// (krill.service) and the deployment guide (README.md), with tests that
// keep them loadable and consistent with the server. The container image
// builder is the command in packaging/image.
package packaging
