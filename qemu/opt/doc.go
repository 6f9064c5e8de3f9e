// Package opt reads and writes QEMU's option syntax, the argument of
// -device, -machine, -chardev and their kind: "virtio-blk-pci,drive=d0,id=vda".
//
// # Vocabulary
//
//   - Element: what lies between two single commas. ",," inside a value is
//     a literal comma; a key ends at the first '=' or ','.
//   - Implied key: an option's first element may be a bare value for the
//     option's main key (-device's driver, -machine's type, -chardev's
//     backend, -netdev's type, -m's size): Parse is told that key.
//   - Flag: a bare element elsewhere is QEMU's short form of key=on.
//
// # What it does not do
//
// It knows no option's keys or values: which ones are allowed is the
// caller's business (package resume keeps an allowlist). It does not read
// the JSON form some options take (-device {"driver":…}).
package opt
