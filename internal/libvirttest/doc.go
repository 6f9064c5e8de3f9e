// Package libvirttest runs the project's test guest (internal/testguest) as a
// libvirt domain, for tests against a real libvirtd.
//
// # Vocabulary
//
//   - Daemon: libvirtd at qemu:///system. [Daemon] uses one that answers;
//     where none does (no systemd here), it starts virtlogd and libvirtd
//     itself in the foreground as its own children and stops them when the
//     test ends. It never touches a daemon it did not start.
//   - Domain: a transient libvirt domain (`virsh create`, gone once
//     destroyed) of type qemu (TCG: guests under KVM hang on the project's
//     machines) booting the test guest's kernel and initramfs from copies in
//     its own directory, on a PC (i440FX) or a q35 whose devices libvirt
//     puts behind PCIe root ports, with a qcow2 disk on virtio-blk (target vda) and
//     the serial console on a unix socket that libvirt listens on and the
//     harness reads: the guest's "tick N" lines, once a second.
//
// # What it does not do
//
// It does not install libvirt (scripts/deps-libvirt.sh does, and sets
// /dev/kvm's group and vm.unprivileged_userfaultfd as the tests need), does
// not define persistent domains, networks or storage pools, and talks to
// libvirt only through virsh: the code under test brings its own client.
package libvirttest
