# Byte rings of lazily held chunks, included by tcp.pyx: the send and the receive
# buffer of a connection.  A ring of capacity ``cap`` keeps its bytes in chunks of
# CB_CHUNK bytes, taken only when a byte is written into one and given back as soon
# as no live byte is left in it (cb_release), so an idle connection holds no buffer
# storage at all, and a busy one only what is queued (rounded up to whole chunks).
# A box with 10,000 mostly idle connections (issue 11) pays for the bytes in
# flight, not for 2 x 4 MiB of address space per engine.
#
# Offsets are the engine's 64-bit stream offsets; offset o lives in chunk
# (o // CB_CHUNK) % nchunks at (o % CB_CHUNK).  The ring's modulus is cap rounded
# up to whole chunks: any modulus >= cap works for a ring whose live bytes never
# span more than cap (the engine's accounting still uses cap).
#
# Chunks come from one process-wide free list (at most CB_POOL_MAX of them; the
# rest go back to malloc) so a flow that frees one chunk at its tail and takes one
# at its head does not call malloc at all.  cb_trim_pool() empties the list and
# asks malloc to return free pages to the kernel (malloc_trim), so the box's RSS
# falls back once its connections are gone (the engine's `release_memory`).

cdef extern from "<malloc.h>" nogil:
    int malloc_trim(size_t pad)

# CB_CHUNK, CB_POOL_MAX and chunkbuf_t are declared in tcp.pxd.

# -- the process-wide pool ----------------------------------------------------------------
cdef void* cb_pool[CB_POOL_MAX]
cdef int cb_pool_n = 0
cdef int64_t cb_chunks_held = 0      # chunks held by all rings of the process
cdef int64_t cb_chunks_allocated = 0  # chunks taken from malloc so far
cdef int64_t cb_chunks_freed = 0      # ... and given back to it


cdef inline uint8_t* cb_chunk_new() noexcept:
    global cb_pool_n, cb_chunks_held, cb_chunks_allocated
    cdef void* p
    if cb_pool_n > 0:
        cb_pool_n -= 1
        p = cb_pool[cb_pool_n]
    else:
        p = malloc(CB_CHUNK)
        if p == NULL:
            return NULL
        cb_chunks_allocated += 1
    cb_chunks_held += 1
    return <uint8_t*>p


cdef inline void cb_chunk_free(uint8_t* p) noexcept:
    global cb_pool_n, cb_chunks_held, cb_chunks_freed
    cb_chunks_held -= 1
    if cb_pool_n < CB_POOL_MAX:
        cb_pool[cb_pool_n] = p
        cb_pool_n += 1
    else:
        free(p)
        cb_chunks_freed += 1


cdef void cb_trim_pool() noexcept:
    global cb_pool_n, cb_chunks_freed
    while cb_pool_n > 0:
        cb_pool_n -= 1
        free(cb_pool[cb_pool_n])
        cb_chunks_freed += 1
    malloc_trim(0)


# -- one ring ---------------------------------------------------------------------------------
cdef inline void cb_init(chunkbuf_t* b, int64_t cap) noexcept:
    b.chunks = NULL
    b.nchunks = (cap + CB_CHUNK - 1) // CB_CHUNK
    b.held = 0


cdef void cb_free_all(chunkbuf_t* b) noexcept:
    cdef int64_t k
    if b.chunks == NULL:
        return
    for k in range(b.nchunks):
        if b.chunks[k] != NULL:
            cb_chunk_free(b.chunks[k])
    free(b.chunks)
    b.chunks = NULL
    b.held = 0


cdef inline uint8_t* cb_chunk_for_write(chunkbuf_t* b, int64_t k) noexcept:
    cdef uint8_t* c
    if b.chunks == NULL:
        b.chunks = <uint8_t**>calloc(b.nchunks, sizeof(uint8_t*))
        if b.chunks == NULL:
            return NULL
    c = b.chunks[k]
    if c == NULL:
        c = cb_chunk_new()
        if c == NULL:
            return NULL
        b.chunks[k] = c
        b.held += 1
    return c


cdef int cb_write(chunkbuf_t* b, int64_t off, const uint8_t* src, int64_t n) except -1:
    """Copy n bytes to offsets [off, off + n); src NULL writes zeros."""
    cdef int64_t within, piece
    cdef uint8_t* c
    while n > 0:
        within = off % CB_CHUNK
        piece = CB_CHUNK - within
        if piece > n:
            piece = n
        c = cb_chunk_for_write(b, (off // CB_CHUNK) % b.nchunks)
        if c == NULL:
            raise MemoryError()
        if src != NULL:
            memcpy(c + within, src, piece)
            src += piece
        else:
            memset(c + within, 0, piece)
        off += piece
        n -= piece
    return 0


cdef void cb_read(chunkbuf_t* b, int64_t off, uint8_t* dst, int64_t n) noexcept:
    """Copy the n bytes at [off, off + n) to dst (a chunk never written reads as zeros)."""
    cdef int64_t within, piece
    cdef uint8_t* c
    while n > 0:
        within = off % CB_CHUNK
        piece = CB_CHUNK - within
        if piece > n:
            piece = n
        c = b.chunks[(off // CB_CHUNK) % b.nchunks] if b.chunks != NULL else NULL
        if c != NULL:
            memcpy(dst, c + within, piece)
        else:
            memset(dst, 0, piece)
        dst += piece
        off += piece
        n -= piece


cdef inline const uint8_t* cb_span(chunkbuf_t* b, int64_t off, int64_t n) noexcept:
    """A pointer to [off, off + n) if those bytes lie in one held chunk, else NULL."""
    cdef int64_t within = off % CB_CHUNK
    if b.chunks == NULL or within + n > CB_CHUNK:
        return NULL
    cdef uint8_t* c = b.chunks[(off // CB_CHUNK) % b.nchunks]
    return c + within if c != NULL else NULL


cdef void cb_release(chunkbuf_t* b, int64_t old_lo, int64_t lo, int64_t hi) noexcept:
    """The live bytes are now [lo, hi) (hi - lo <= cap), were [old_lo, ...): give back
    every chunk wholly below lo that no live byte maps to (the ring may have wrapped
    onto it: block blk + nchunks is live when hi reaches into it)."""
    cdef int64_t blk, last, k
    if b.held == 0:
        return
    if hi <= lo:
        cb_free_all(b)
        return
    last = lo // CB_CHUNK                 # the first block still (partly) live
    blk = old_lo // CB_CHUNK
    if blk < last - b.nchunks:
        blk = last - b.nchunks
    if blk < 0:
        blk = 0
    while blk < last:
        if (hi - 1) // CB_CHUNK < blk + b.nchunks:   # nothing live wrapped onto it
            k = blk % b.nchunks
            if b.chunks[k] != NULL:
                cb_chunk_free(b.chunks[k])
                b.chunks[k] = NULL
                b.held -= 1
        blk += 1
    if b.held == 0:
        free(b.chunks)
        b.chunks = NULL


cdef inline int64_t cb_bytes(chunkbuf_t* b) noexcept:
    """Storage held: chunks and the chunk table."""
    if b.chunks == NULL:
        return 0
    return b.held * CB_CHUNK + b.nchunks * <int64_t>sizeof(uint8_t*)
