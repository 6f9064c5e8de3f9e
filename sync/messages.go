package sync

import (
	"fmt"
	"time"

	"github.com/restic/chunker"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
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

// maxCandidates bounds the versions a sender offers as possible bases.
const maxCandidates = 64

// candidates follows hello: whether the sender asks for its version to be
// made current whatever the receiver's head, and the digests of the
// sender's versions of the set, newest first.
type candidates struct {
	force   bool
	digests []repo.Digest
}

func (m candidates) encode() []byte {
	var e enc
	e.flag(m.force)
	e.uvarint(uint64(len(m.digests)))
	for _, d := range m.digests {
		e.id(chunk.ID(d))
	}
	return e.b
}

func decodeCandidates(p []byte) (candidates, error) {
	d := dec{b: p}
	m := candidates{force: d.flag("force")}
	n := d.count(32)
	if n > maxCandidates {
		d.fail("too many candidate versions")
		n = 0
	}
	for range n {
		m.digests = append(m.digests, repo.Digest(d.id()))
	}
	return m, d.done()
}

// imageRef names an image of a version and the digest of its index.
type imageRef struct {
	name   string
	digest chunk.ID // BLAKE3 of the encoded index
}

// base is the newest version of the set both sides hold (the common base;
// zero when there is none) and the receiver's current version. It also
// names the push session, so that data may come over more connections
// than the control one.
type base struct {
	version uint64 // the base's number on the receiver, for its log
	digest  repo.Digest
	images  []imageRef
	head    repo.Digest
	session token
}

// token names a push session on the receiver.
type token [16]byte

func (m base) encode() []byte {
	var e enc
	e.uvarint(m.version)
	e.id(chunk.ID(m.digest))
	e.uvarint(uint64(len(m.images)))
	for _, im := range m.images {
		e.str(im.name)
		e.id(im.digest)
	}
	e.id(chunk.ID(m.head))
	e.b = append(e.b, m.session[:]...)
	return e.b
}

func decodeBase(p []byte) (base, error) {
	d := dec{b: p}
	m := base{version: d.uvarint(), digest: repo.Digest(d.id())}
	n := d.count(33)
	if n > maxOfferImages {
		d.fail("too many images")
		n = 0
	}
	for range n {
		m.images = append(m.images, imageRef{name: d.str(maxName), digest: d.id()})
	}
	m.head = repo.Digest(d.id())
	m.session = d.token()
	return m, d.done()
}

// flag writes a boolean as 0 or 1.
func (e *enc) flag(b bool) {
	if b {
		e.uvarint(1)
	} else {
		e.uvarint(0)
	}
}

// flag reads a boolean written by enc.flag.
func (d *dec) flag(what string) bool {
	switch d.uvarint() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bad " + what + " flag")
	return false
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

// offer opens a new version; ops frames and an end frame follow. It
// carries the version's header (the receiver computes the digest again
// from it and the indexes the ops build) and the lineage links from the
// version back to the base.
type offer struct {
	digest  repo.Digest
	parent  repo.Digest
	node    string
	created time.Time
	base    repo.Digest // the version the ops edit; zero for none
	links   []repo.Link
	meta    []byte
	images  []offerImage
}

// maxLinks bounds the lineage links of an offer.
const maxLinks = 10000

// maxNode bounds the name of the node that made a version.
const maxNode = 128

// maxMeta bounds a version's metadata.
const maxMeta = 1 << 20

// maxOfferImages bounds the images a decoded offer or base may list.
const maxOfferImages = 4096

func (m offer) encode() []byte {
	var e enc
	e.id(chunk.ID(m.digest))
	e.id(chunk.ID(m.parent))
	e.str(m.node)
	e.u64(uint64(m.created.UnixNano()))
	e.id(chunk.ID(m.base))
	e.uvarint(uint64(len(m.links)))
	for _, l := range m.links {
		e.id(chunk.ID(l.Digest))
		e.id(chunk.ID(l.Parent))
	}
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
	m := offer{digest: repo.Digest(d.id()), parent: repo.Digest(d.id()), node: d.str(maxNode)}
	m.created = time.Unix(0, int64(d.u64())).UTC()
	m.base = repo.Digest(d.id())
	nl := d.count(64)
	if nl > maxLinks {
		d.fail("too many lineage links")
		nl = 0
	}
	for range nl {
		m.links = append(m.links, repo.Link{Digest: repo.Digest(d.id()), Parent: repo.Digest(d.id())})
	}
	m.meta = d.bytes()
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
	if d.err == nil && m.digest.IsZero() {
		d.fail("an offer without a digest")
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

// chunksMsg is a group of chunks on a data stream, compressed together
// so that each shares the others' context (protocol 3): a count (2 to
// maxGroupChunks), the chunks' ordinals, a codec (zstd only) and one zstd
// frame of their contents, concatenated in that order. Each chunk is
// still verified alone.
type chunksMsg struct {
	ordinals []uint64
	codec    byte
	data     []byte
}

// A group holds at most maxGroupChunks chunks and maxGroupBytes of
// content: a receiver decompresses at most that much at once.
const (
	maxGroupChunks = 64
	maxGroupBytes  = 1 << 20
)

// appendHead appends the encoding of m up to its data, which follows.
func (m chunksMsg) appendHead(b []byte) []byte {
	e := enc{b: b}
	e.uvarint(uint64(len(m.ordinals)))
	for _, o := range m.ordinals {
		e.uvarint(o)
	}
	e.b = append(e.b, m.codec)
	return e.b
}

func decodeChunks(p []byte) (chunksMsg, error) {
	d := dec{b: p}
	n := d.count(1)
	if d.err == nil && (n < 2 || n > maxGroupChunks) {
		d.fail(fmt.Sprintf("a group of %d chunks", n))
	}
	var m chunksMsg
	for range n {
		m.ordinals = append(m.ordinals, d.uvarint())
	}
	if d.err == nil && len(d.b) < 1 {
		d.fail("chunk group without codec")
	}
	if d.err != nil {
		return chunksMsg{}, d.err
	}
	m.codec, m.data = d.b[0], d.b[1:]
	if m.codec != codecZstd {
		return chunksMsg{}, fmt.Errorf("%w: chunk group codec %d", ErrMalformed, m.codec)
	}
	return m, nil
}

// committed answers an offer: the version's number on the receiver, the
// receiver's current version after the commit, and whether the version
// was kept without becoming current (the copies diverged).
type committed struct {
	version  uint64
	head     repo.Digest
	diverged bool
}

func (m committed) encode() []byte {
	var e enc
	e.uvarint(m.version)
	e.id(chunk.ID(m.head))
	e.flag(m.diverged)
	return e.b
}

func decodeCommitted(p []byte) (committed, error) {
	d := dec{b: p}
	m := committed{version: d.uvarint(), head: repo.Digest(d.id())}
	m.diverged = d.flag("diverged")
	return m, d.done()
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
