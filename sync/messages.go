package sync

import (
	"fmt"

	"github.com/restic/chunker"

	"github.com/ntc-project/ntc/chunk"
)

type hello struct {
	version uint64
	set     string
}

func (m hello) encode() []byte {
	var e enc
	e.str(helloMagic)
	e.uvarint(m.version)
	e.str(m.set)
	return e.b
}

func decodeHello(p []byte) (hello, error) {
	d := dec{b: p}
	if d.str(16) != helloMagic && d.err == nil {
		d.fail("not an ntc sync stream")
	}
	m := hello{version: d.uvarint(), set: d.str(maxName)}
	return m, d.done()
}

// imageRef names an image of a version and the digest of its index.
type imageRef struct {
	name   string
	digest chunk.ID // BLAKE3 of the encoded index
}

// base is what the receiver holds of the set: its current version. It
// also names the push session, so that data may come over more
// connections than the control one.
type base struct {
	version uint64
	images  []imageRef
	session token
}

// token names a push session on the receiver.
type token [16]byte

func (m base) encode() []byte {
	var e enc
	e.uvarint(m.version)
	e.uvarint(uint64(len(m.images)))
	for _, im := range m.images {
		e.str(im.name)
		e.id(im.digest)
	}
	e.b = append(e.b, m.session[:]...)
	return e.b
}

func decodeBase(p []byte) (base, error) {
	d := dec{b: p}
	m := base{version: d.uvarint()}
	n := d.count(33)
	if n > maxOfferImages {
		d.fail("too many images")
		n = 0
	}
	for range n {
		m.images = append(m.images, imageRef{name: d.str(maxName), digest: d.id()})
	}
	m.session = d.token()
	return m, d.done()
}

// token reads a session token.
func (d *dec) token() token {
	var t token
	if d.err == nil && len(d.b) < len(t) {
		d.fail("bad session token")
	}
	if d.err != nil {
		return t
	}
	copy(t[:], d.b)
	d.b = d.b[len(t):]
	return t
}

// dataHeader opens a data stream: the round and the session it belongs to.
type dataHeader struct {
	round   uint64
	session token
}

func (m dataHeader) encode() []byte {
	var e enc
	e.uvarint(m.round)
	e.b = append(e.b, m.session[:]...)
	return e.b
}

func decodeDataHeader(p []byte) (dataHeader, error) {
	d := dec{b: p}
	m := dataHeader{round: d.uvarint()}
	m.session = d.token()
	return m, d.done()
}

func encodeName(name string) []byte {
	var e enc
	e.str(name)
	return e.b
}

func decodeName(p []byte) (string, error) {
	d := dec{b: p}
	s := d.str(maxName)
	return s, d.done()
}

// indexMsg carries an encoded index.
func encodeIndexMsg(name string, idx []byte) []byte {
	var e enc
	e.str(name)
	e.bytes(idx)
	return e.b
}

func decodeIndexMsg(p []byte) (string, []byte, error) {
	d := dec{b: p}
	name := d.str(maxName)
	b := d.bytes()
	return name, b, d.done()
}

// offerImage describes one image of an offered version. Its entries follow
// in ops frames, as edits of the base image of the same name (or of an
// empty list when based is false).
type offerImage struct {
	name   string
	size   int64
	params chunk.Params
	based  bool
	// baseDigest names the base image's index the ops edit (when based):
	// a receiver whose image differs ignores the offer.
	baseDigest chunk.ID
}

// offer opens a new version; ops frames and an end frame follow.
type offer struct {
	version uint64
	base    uint64
	meta    []byte
	images  []offerImage
}

// maxMeta bounds a version's metadata.
const maxMeta = 1 << 20

// maxOfferImages bounds the images a decoded offer or base may list.
const maxOfferImages = 4096

func (m offer) encode() []byte {
	var e enc
	e.uvarint(m.version)
	e.uvarint(m.base)
	e.bytes(m.meta)
	e.uvarint(uint64(len(m.images)))
	for _, im := range m.images {
		e.str(im.name)
		e.uvarint(uint64(im.size))
		e.uvarint(uint64(im.params.Kind))
		e.uvarint(uint64(im.params.AvgBits))
		e.u64(uint64(im.params.Pol))
		e.uvarint(uint64(im.params.MinSize))
		e.uvarint(uint64(im.params.MaxSize))
		if im.based {
			e.uvarint(1)
			e.id(im.baseDigest)
		} else {
			e.uvarint(0)
		}
	}
	return e.b
}

func decodeOffer(p []byte) (offer, error) {
	d := dec{b: p}
	m := offer{version: d.uvarint(), base: d.uvarint(), meta: d.bytes()}
	if len(m.meta) > maxMeta {
		d.fail("metadata too large")
	}
	n := d.count(10)
	if n > maxOfferImages {
		d.fail("too many images")
		n = 0
	}
	for range n {
		im := offerImage{name: d.str(maxName), size: int64(d.uvarint())}
		im.params.Kind = chunk.Kind(d.uvarint())
		im.params.AvgBits = uint8(d.uvarint())
		im.params.Pol = chunker.Pol(d.u64())
		im.params.MinSize = uint32(d.uvarint())
		im.params.MaxSize = uint32(d.uvarint())
		switch d.uvarint() {
		case 0:
		case 1:
			im.based, im.baseDigest = true, d.id()
		default:
			d.fail("bad based flag")
		}
		if d.err == nil {
			if im.size < 0 || im.size > 1<<50 {
				d.fail("bad image size")
			} else if err := im.params.Validate(); err != nil {
				d.fail(err.Error())
			}
		}
		m.images = append(m.images, im)
	}
	if m.version == 0 || m.version != m.base+1 {
		d.fail(fmt.Sprintf("version %d does not follow base %d", m.version, m.base))
	}
	return m, d.done()
}

// opsMsg carries a run of one image's ops; last marks the image's end.
type opsMsg struct {
	image int
	ops   []op
}

func (m opsMsg) encode() []byte {
	var e enc
	e.uvarint(uint64(m.image))
	encodeOps(&e, m.ops)
	return e.b
}

func decodeOpsMsg(p []byte) (opsMsg, error) {
	d := dec{b: p}
	m := opsMsg{image: int(min(d.uvarint(), 1<<31))}
	m.ops = decodeOps(&d)
	return m, d.done()
}

// want asks for the chunks of the offer's new-chunk list whose bits are
// set, in round r.
type want struct {
	round  uint64
	bitmap []byte
}

func (m want) encode() []byte {
	var e enc
	e.uvarint(m.round)
	e.bytes(m.bitmap)
	return e.b
}

func decodeWant(p []byte) (want, error) {
	d := dec{b: p}
	m := want{round: d.uvarint(), bitmap: d.bytes()}
	return m, d.done()
}

// chunkMsg is one chunk on a data stream.
type chunkMsg struct {
	ordinal uint64
	codec   byte
	data    []byte
}

const (
	codecRaw  = 0
	codecZstd = 1
	// codecPatch rebuilds the chunk from the receiver's base image at the
	// chunk's offset and literal bytes: uvarint segment count, each
	// uvarint(length<<1 | literal), then one byte (0 raw, 1 zstd) and the
	// literal bytes of all literal segments in order.
	codecPatch = 2
)

func (m chunkMsg) appendTo(b []byte) []byte {
	return append(m.appendHead(b), m.data...)
}

// appendHead appends the encoding of m up to its data, which follows.
func (m chunkMsg) appendHead(b []byte) []byte {
	e := enc{b: b}
	e.uvarint(m.ordinal)
	e.b = append(e.b, m.codec)
	return e.b
}

func decodeChunk(p []byte) (chunkMsg, error) {
	d := dec{b: p}
	m := chunkMsg{ordinal: d.uvarint()}
	if d.err == nil && len(d.b) < 1 {
		d.fail("chunk without codec")
	}
	if d.err != nil {
		return m, d.err
	}
	m.codec, m.data = d.b[0], d.b[1:]
	if m.codec > codecPatch {
		return m, fmt.Errorf("%w: unknown chunk codec %d", ErrMalformed, m.codec)
	}
	return m, nil
}

func encodeUint(v uint64) []byte {
	var e enc
	e.uvarint(v)
	return e.b
}

func decodeUint(p []byte) (uint64, error) {
	d := dec{b: p}
	v := d.uvarint()
	return v, d.done()
}

// sent opens a round's data: how many data streams the sender opens for it.
type sent struct {
	round   uint64
	streams uint64
}

func (m sent) encode() []byte {
	var e enc
	e.uvarint(m.round)
	e.uvarint(m.streams)
	return e.b
}

func decodeSent(p []byte) (sent, error) {
	d := dec{b: p}
	m := sent{round: d.uvarint(), streams: d.uvarint()}
	if d.err == nil && m.streams > maxStreams {
		d.fail("too many streams")
	}
	return m, d.done()
}
