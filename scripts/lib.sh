# Sourced by scripts/demo.sh, scripts/chaos.sh and scripts/test.sh (after scripts/setup.sh
# has made .venv): work from the repository root with the project's venv and ansible.cfg.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export PATH="$ROOT/.venv/bin:$PATH"

# fleet_up INVENTORY [RELEASE_DIR]: the node image (cached by recipe hash), signed
# release-like archives of the stand-in daemon, the inventory's node containers (kept when
# unchanged, recreated when their settings changed) and one converge of playbooks/site.yml
# (a no-op on a converged fleet).
fleet_up() {
  bash tests/image/build.sh
  bash tests/release/build_release.sh "${2:-build/release}"
  ansible-playbook -i "$1" tests/fleet/create.yml
  ansible-playbook -i "$1" playbooks/site.yml
}
