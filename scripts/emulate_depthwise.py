"""Host emulation of csrc/cuda/conv_depthwise.cu (launcher + depthwise_kernel), thread by thread, in numpy.

Checks the kernel's index logic without a GPU: grid sizing (segments, channel slices), receptive-field tap bits
with batched / unstaged mask staging, compaction order, the (pixel lane, channel vector) mapping, two pixels per
round, tap skipping. Asserts that inactive inputs are never read (they are NaN), that no output is written twice,
and that the result and out_mask equal a direct numpy oracle. It mirrors the CUDA code by hand: update both
together. Run: python scripts/emulate_depthwise.py (about a minute).
"""

import itertools

import numpy as np

kThreads, kItems, kMaxSeg, kMaxSlots, kPix, kMaskSpan = 256, 4, 1024, 32, 2, 8192


def source_index(pos, lhs, size):
    if lhs != 1:
        pos = pos // lhs if (pos >= 0 and pos % lhs == 0) else -1
    return pos if pos < size else -1


def receptive_field(P, b, oy, x0, n_out, kBits, span_limit=kMaskSpan):
    in_h, in_w = P["h"], P["w"]
    m = P["mask"][b]
    taps = [[0] * kItems for _ in range(kThreads)]
    pos_lo = x0 * P["sw"] - P["pl"]
    pos_hi = (x0 + n_out - 1) * P["sw"] + (P["kw"] - 1) * P["dw"] - P["pl"]
    lo = 0 if pos_lo <= 0 else (pos_lo + 1 - 1) // 1
    hi = -1 if pos_hi < 0 else min(in_w - 1, pos_hi)
    width = hi - lo + 1
    if width <= 0 or n_out <= 0:
        return taps, 0
    batch = min(P["kh"], span_limit // width) if width <= span_limit else 0
    step = batch if batch > 0 else P["kh"]
    nbatches = 0
    for k0 in range(0, P["kh"], step):
        k1 = min(P["kh"], k0 + step)
        span = np.full(span_limit, 255, np.uint8)  # garbage
        if batch > 0:
            nbatches += 1
            for ky in range(k0, k1):
                iy = source_index(oy * P["sh"] + ky * P["dh"] - P["pt"], 1, in_h)
                if iy < 0:
                    continue
                span[(ky - k0) * width : (ky - k0) * width + width] = m[iy, lo : lo + width]
        for ky in range(k0, k1):
            iy = source_index(oy * P["sh"] + ky * P["dh"] - P["pt"], 1, in_h)
            if iy < 0:
                continue
            for tid in range(kThreads):
                for i in range(kItems):
                    ox = x0 + i * kThreads + tid
                    if ox >= x0 + n_out or (not kBits and taps[tid][i]):
                        continue
                    for kx in range(P["kw"]):
                        ix = source_index(ox * P["sw"] + kx * P["dw"] - P["pl"], 1, in_w)
                        if ix >= 0:
                            assert lo <= ix <= hi
                            v = span[(ky - k0) * width + ix - lo] if batch > 0 else m[iy, ix]
                            if v:
                                if kBits:
                                    taps[tid][i] |= 1 << (ky * P["kw"] + kx)
                                else:
                                    taps[tid][i] = 1
                                    break
    return taps, nbatches


def launch(P, V, sms=132, span_limit=kMaskSpan):
    c = P["c"]
    slots = (c + V - 1) // V
    z = (slots + kMaxSlots - 1) // kMaxSlots
    per_block = (slots + z - 1) // z
    z = (slots + per_block - 1) // per_block
    rows = P["n"] * P["ho"]
    seg = kMaxSeg
    while seg > 32 and rows * ((P["wo"] + seg - 1) // seg) * z < 4 * sms:
        seg //= 2
    segs = (P["wo"] + seg - 1) // seg
    vector = c % V == 0
    out = np.full((P["n"], P["ho"], P["wo"], c), np.nan, np.float64)
    out_mask = np.full((P["n"], P["ho"], P["wo"]), 7, np.uint8)
    stats = dict(seg=seg, z=z, per_block=per_block, batches=set())
    for bx, by, bz in itertools.product(range(rows), range(segs), range(z)):
        kernel_block(P, V, vector, seg, per_block, bx, by, bz, out, out_mask, stats, span_limit)
    return out, out_mask, stats


def kernel_block(P, V, vector, seg, spb, bx, by, bz, out, out_mask, stats, span_limit):
    ho, wo, in_h, in_w, c = P["ho"], P["wo"], P["h"], P["w"], P["c"]
    row = bx
    b = row // ho
    oy = row - b * ho
    x0 = by * seg
    n_out = min(seg, wo - x0)
    taps, nb = receptive_field(P, b, oy, x0, n_out, True, span_limit)
    stats["batches"].add(nb)
    # ballots / compaction in (item, warp, lane) order
    tap_bits, column = [None] * kMaxSeg, [None] * kMaxSeg
    k = 0
    for i in range(kItems):
        for tid in range(kThreads):
            j = i * kThreads + tid
            active = taps[tid][i] != 0
            if bz == 0 and j < n_out:
                out_mask[b, oy, x0 + j] = active
            if active:
                assert j < n_out
                tap_bits[k] = taps[tid][i]
                column[k] = j
                k += 1
    count = k
    if count == 0:
        return
    slots = (c + V - 1) // V
    s0 = bz * spb
    nslots = min(spb, slots - s0)
    assert nslots >= 1
    lanes = kThreads // nslots
    x = P["x"]
    w = P["k"]
    y0 = oy * P["sh"] - P["pt"]
    for tid in range(kThreads):
        lane_px = tid // nslots
        if lane_px >= lanes:
            continue
        c0 = (s0 + tid - lane_px * nslots) * V
        nch = min(V, c - c0)
        assert nch >= 1 and (not vector or nch == V)
        for j in range(lane_px, count, kPix * lanes):
            tb, col, xs = [], [], []
            anyb = 0
            for q in range(kPix):
                jq = j + q * lanes
                ok = jq < count
                tb.append(tap_bits[jq] if ok else 0)
                col.append(column[jq] if ok else 0)
                xs.append((x0 + col[q]) * P["sw"] - P["pl"])
                anyb |= tb[q]
            acc = np.zeros((kPix, V))
            t = 0
            for ky in range(P["kh"]):
                iy = y0 + ky * P["dh"]
                row_px = iy * in_w if 0 <= iy < in_h else 0
                for kx in range(P["kw"]):
                    if (anyb >> t) & 1:
                        wf = np.zeros(V)
                        wf[:nch] = w[ky, kx, 0, c0 : c0 + nch]
                        for q in range(kPix):
                            use = (tb[q] >> t) & 1
                            px = row_px + xs[q] + kx * P["dw"] if use else 0
                            xv = np.zeros(V)
                            if use:
                                assert 0 <= iy < in_h and 0 <= px - row_px < in_w
                                assert P["mask"][b, iy, px - row_px]
                                xv[:nch] = x[b].reshape(-1, c)[px, c0 : c0 + nch]
                            acc[q] += xv * wf
                    t += 1
            for q in range(kPix):
                if j + q * lanes < count:
                    o = out[b, oy, x0 + col[q]]
                    assert np.all(np.isnan(o[c0 : c0 + nch])), "written twice"
                    o[c0 : c0 + nch] = acc[q][:nch]


def oracle(P):
    n, h, w_, c = P["x"].shape
    xm = np.where(P["mask"][..., None], P["x"], 0.0)
    out = np.zeros((n, P["ho"], P["wo"], c))
    om = np.zeros((n, P["ho"], P["wo"]), bool)
    for b, oy, ox in itertools.product(range(n), range(P["ho"]), range(P["wo"])):
        for ky, kx in itertools.product(range(P["kh"]), range(P["kw"])):
            iy = oy * P["sh"] + ky * P["dh"] - P["pt"]
            ix = ox * P["sw"] + kx * P["dw"] - P["pl"]
            if 0 <= iy < h and 0 <= ix < w_:
                out[b, oy, ox] += xm[b, iy, ix] * P["k"][ky, kx, 0]
                om[b, oy, ox] |= P["mask"][b, iy, ix]
    return out, om


def case(seed, n, h, w, c, kh, kw, sh=1, sw=1, dh=1, dw=1, pad="SAME", p=0.3, V=8, sms=132, span_limit=kMaskSpan):
    rng = np.random.default_rng(seed)

    def osz(size, k, s, d):
        eff = (k - 1) * d + 1
        if pad == "SAME":
            o = -(-size // s)
            total = max((o - 1) * s + eff - size, 0)
            return o, total // 2
        return (size - eff) // s + 1, 0

    ho, pt = osz(h, kh, sh, dh)
    wo, pl = osz(w, kw, sw, dw)
    mask = rng.random((n, h, w)) < p
    x = rng.normal(size=(n, h, w, c))
    x[~mask] = np.nan
    k = rng.normal(size=(kh, kw, 1, c))
    P = dict(
        n=n, h=h, w=w, c=c, ho=ho, wo=wo, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl, x=x, mask=mask, k=k
    )
    got, gm, st = launch(P, V, sms, span_limit)
    want, wm = oracle(P)
    assert np.array_equal(gm.astype(bool), wm) and np.all(gm <= 1)
    assert np.allclose(got[wm], want[wm]), np.abs(got[wm] - want[wm]).max()
    assert np.all(np.isnan(got[~wm]))
    return st


if __name__ == "__main__":
    print(case(0, 2, 9, 11, 64, 3, 3))
    print(case(1, 1, 8, 9, 13, 3, 3))
    print(case(2, 1, 9, 10, 13, 5, 5, sh=2, sw=2, V=4))
    print(case(3, 1, 6, 7, 520, 3, 3))
    print(case(4, 1, 6, 7, 272, 3, 3, V=4))
    print(case(5, 1, 11, 9, 40, 5, 3, p=0.5))
    print(case(6, 1, 9, 20, 16, 1, 7))
    print(case(7, 1, 14, 13, 32, 3, 3, dh=2, dw=2))
    print(case(8, 1, 20, 17, 24, 3, 3, sh=3, sw=3, pad="VALID"))
    print(case(9, 1, 15, 16, 8, 7, 7, p=0.1))
    print(case(10, 1, 8, 9, 1, 3, 3, p=1.0))
    print(case(11, 1, 8, 9, 8, 3, 3, p=0.0))
    # force 1024-wide segments (sms=1 -> target 4 blocks) and multi-batch / unstaged mask reads
    print(case(12, 1, 5, 1100, 8, 3, 3, sms=1))
    print(case(13, 1, 7, 2100, 8, 5, 5, sh=2, sw=2, sms=1, p=0.1))
    print(case(14, 1, 3, 300, 8, 3, 3, sw=1, sms=1, span_limit=100, p=0.2))
    print(case(15, 1, 7, 2100, 8, 5, 5, sh=2, sw=2, sms=1, p=0.1, span_limit=600))
    print("all ok")
