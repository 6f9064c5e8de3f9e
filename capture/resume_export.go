package capture

import "github.com/ntc-project/ntc/capture/migstream"

// What package resume needs from a checkpoint as a receiver holds it: the
// images as files, without the capture repository.

// DecodeStreamDescription decodes a checkpoint's stream description (the
// blob Manifest.Stream names, the image called "stream" in a push) into a
// migstream.Stream without its device state: set Devices from the device
// state image, then migstream.Join writes the stream `qemu -incoming`
// accepts.
func DecodeStreamDescription(b []byte) (*migstream.Stream, error) {
	return decodeStreamMeta(b)
}
