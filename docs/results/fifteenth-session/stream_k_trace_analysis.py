import sys
sec=None; data={}
for l in open(sys.argv[1]):
    if l.startswith('#'): sec=l[2:].strip(); data[sec]=[]; continue
    c,sm,t0,t1,t2=map(int,l.split()); data[sec].append((c,sm,t0,t1,t2))
for sec,rows in data.items():
    base=min(r[2] for r in rows)
    fix=lambda t: (t-base) % (1<<32)
    rows=[(c,sm,fix(t0),fix(t1),fix(t2)) for c,sm,t0,t1,t2 in rows]
    end=max(r[4] for r in rows); n=len(rows)
    sk = sec.endswith(':on')
    print(f"{sec}: {n} CTAs, span {end/1e3:.1f} us")
    if sk:
        S=264; dp=[r for r in rows if r[0] < n-S]; tail=[r for r in rows if r[0] >= n-S]
    else:
        dp=rows; tail=[]
    d=sorted(r[4]-r[2] for r in dp); print(f"  whole-block CTAs: {len(dp)}, duration median {d[len(d)//2]/1e3:.1f} us (p10 {d[len(d)//10]/1e3:.1f}, p90 {d[9*len(d)//10]/1e3:.1f}); last ends {max(r[4] for r in dp)/1e3:.1f} us")
    if tail:
        ts=sorted(r[2] for r in tail); te=sorted(r[4] for r in tail); dur=sorted(r[4]-r[2] for r in tail)
        two=[r for r in tail if r[3]!=r[4] and r[4]-r[3]>500]
        s0=sorted(r[3]-r[2] for r in tail)
        print(f"  tail CTAs: {len(tail)}, start first {ts[0]/1e3:.1f} median {ts[len(ts)//2]/1e3:.1f} last {ts[-1]/1e3:.1f} us; end first {te[0]/1e3:.1f} median {te[len(te)//2]/1e3:.1f} last {te[-1]/1e3:.1f} us")
        print(f"  tail CTA duration median {dur[len(dur)//2]/1e3:.1f} us (min {dur[0]/1e3:.1f}, max {dur[-1]/1e3:.1f}); first segment median {s0[len(s0)//2]/1e3:.1f} us")
    # idle slot time after the last start
    ev=[]
    for r in rows: ev += [(r[2],1),(r[4],-1)]
    ev.sort(); c=0; prev=0; area=0
    last_start=max(r[2] for r in rows)
    for t,dd in ev:
        if prev>=last_start: area += (264-c)*(t-prev)
        prev=t; c+=dd
    print(f"  last CTA start {last_start/1e3:.1f} us; idle slot-time after it {area/264/1e3:.1f} us of full-GPU time ({area/264/end*100:.1f}% of span)")
