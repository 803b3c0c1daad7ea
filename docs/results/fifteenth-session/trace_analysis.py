import sys, collections
def analyse(name, rows):
    t0 = min(r[4] for r in rows)
    rows = [(b,h,q,sm,s-t0,e-t0) for b,h,q,sm,s,e in rows]
    end = max(r[5] for r in rows); n=len(rows)
    sms = collections.defaultdict(list)
    for r in rows: sms[r[3]].append((r[4], r[5]))
    nsm = len(sms)
    # SM busy profile: number of resident CTAs over time, sampled
    last_start = max(r[4] for r in rows)
    sm_last_end = sorted(max(e for s,e in v) for v in sms.values())
    durs = sorted(r[5]-r[4] for r in rows)
    # work-conserving ideal: total CTA-time / (2*nsm) assuming 2 CTA slots at same speed
    busy = 0.0
    for v in sms.values():
        # union of intervals
        v = sorted(v); cur_s, cur_e = v[0]; tot=0
        for s,e in v[1:]:
            if s > cur_e: tot += cur_e-cur_s; cur_s, cur_e = s, e
            else: cur_e = max(cur_e, e)
        tot += cur_e-cur_s; busy += tot
    # time-weighted concurrency per SM
    ev=[]
    for r in rows: ev += [(r[4],1),(r[5],-1)]
    ev.sort(); c=0; prev=0; area=collections.Counter()
    for t,d in ev:
        area[c]+= t-prev; prev=t; c+=d
    # durations by whether CTA overlapped with another on its SM at all times? approximate: median of first wave vs last
    first_wave = sorted(rows, key=lambda r: r[4])[:2*nsm]
    last = sorted(rows, key=lambda r: r[5])[-nsm:]
    print(f"{name}: {n} CTAs on {nsm} SMs, kernel span {end/1e3:.1f} us, last CTA start {last_start/1e3:.1f} us")
    print(f"  CTA duration us: min {durs[0]/1e3:.1f} p10 {durs[n//10]/1e3:.1f} median {durs[n//2]/1e3:.1f} p90 {durs[9*n//10]/1e3:.1f} max {durs[-1]/1e3:.1f}")
    print(f"  SM busy (any CTA) {busy/(nsm*end)*100:.1f}% of SM-time; SMs' last ends: first {sm_last_end[0]/1e3:.1f} median {sm_last_end[nsm//2]/1e3:.1f} last {sm_last_end[-1]/1e3:.1f} us")
    print(f"  mean resident CTAs over span: {sum(k*v for k,v in area.items())/end:.1f} of {2*nsm}; first start spread {max(r[4] for r in first_wave)/1e3:.1f} us")
    # drain: from time when concurrency first drops below 2*nsm*0.95 for good
    ev.sort(); c=0; t_drop=None
    cs=[]
    for t,d in ev:
        c+=d; cs.append((t,c))
    full=2*nsm
    for t,c in cs:
        if c >= 0.95*full: t_drop=t
    # idle slot-time after t_drop
    idle_after = sum(full - c for c in [0])
    slot_area_after = 0; prev=None
    for (t,c),(t2,_) in zip(cs, cs[1:]):
        if t >= t_drop: slot_area_after += (full-c)*(t2-t)
    print(f"  last time >=95% slots filled: {t_drop/1e3:.1f} us; idle slot-time after it = {slot_area_after/full/1e3:.1f} us of full-GPU time ({slot_area_after/full/end*100:.1f}% of span)")
    # duration of CTAs alone on SM vs paired: compute fraction of each CTA's life when its SM had 2
    solo=[];pair=[]
    for v in sms.values():
        v=sorted(v)
        for i,(s,e) in enumerate(v):
            ov=sum(max(0,min(e,e2)-max(s,s2)) for j,(s2,e2) in enumerate(v) if j!=i)
            frac=ov/(e-s)
            (pair if frac>0.95 else solo if frac<0.3 else []).append(e-s)
    if pair: print(f"  paired-all-life CTAs: {len(pair)} median {sorted(pair)[len(pair)//2]/1e3:.1f} us; mostly-alone CTAs: {len(solo)} median {sorted(solo)[len(solo)//2]/1e3 if solo else 0:.1f} us")
cur=None; rows=[]
for line in open(sys.argv[1]):
    if line.startswith('#'):
        if rows: analyse(cur, rows)
        cur=line[2:].strip(); rows=[]; continue
    b,h,q,sm,s,e = map(int,line.split())
    if e < s: e += 1<<32
    rows.append((b,h,q,sm,s,e))
if rows: analyse(cur, rows)
