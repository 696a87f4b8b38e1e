# Old site recalibration (refit every head) vs the card, emulated from the card's own
# predictions: logit(p_card) is affine in the head's logit, so a Platt refit on it is the
# refit the engine did before keep_or_refit (MC averaging makes this approximate).
import csv, math, sys
def ece(p, y, bins=15):
    n=len(p); tot=0.0
    for b in range(bins):
        lo,hi=b/bins,(b+1)/bins
        idx=[i for i in range(n) if (lo<=p[i]<hi) or (b==bins-1 and p[i]==1.0)]
        if idx:
            tot+=abs(sum(p[i] for i in idx)/len(idx)-sum(y[i] for i in idx)/len(idx))*len(idx)/n
    return tot
def platt(z,y,l2=1e-3):
    a,b=1.0,0.0
    for _ in range(100):
        g=[0,0];H=[[l2,0],[0,0]]
        g[0]+=l2*a
        for zi,yi in zip(z,y):
            p=1/(1+math.exp(-(a*zi+b)));r=p-yi;w=p*(1-p)
            g[0]+=r*zi;g[1]+=r;H[0][0]+=w*zi*zi;H[0][1]+=w*zi;H[1][1]+=w
        H[1][0]=H[0][1];det=H[0][0]*H[1][1]-H[0][1]**2
        da=(H[1][1]*g[0]-H[0][1]*g[1])/det;db=(-H[1][0]*g[0]+H[0][0]*g[1])/det
        a-=da;b-=db
        if abs(da)+abs(db)<1e-10:break
    return a,b
# Usage: python3 scripts/refit_always_ece.py SHIFT_SUITE_OUT cohort [cohort ...]
root=sys.argv[1]
for c in sys.argv[2:]:
    d=f'{root}/{c}'
    out={r['study_id']:r for r in csv.DictReader(open(f'{d}/cohort/outcomes.csv'))}
    rows=list(csv.DictReader(open(f'{d}/report/predictions.csv')))
    key=[k for k in out[rows[0]['study_key']].keys() if 'mortality' in k][0]
    def part(s):
        zz,yy=[],[]
        for r in rows:
            o=out[r['study_key']][key]
            if r['split']!=s or o in ('',None): continue
            p=min(max(float(r['mortality_30d']),1e-12),1-1e-12)
            zz.append(math.log(p/(1-p)));yy.append(1 if o in ('1','true','True') else 0)
        return zz,yy
    zv,yv=part('validation');zt,yt=part('test')
    a,b=platt(zv,yv)
    card=ece([1/(1+math.exp(-z)) for z in zt],yt)
    refit=ece([1/(1+math.exp(-(a*z+b))) for z in zt],yt)
    print(f'{c}: site half {len(zv)} ({sum(yv)} deaths), reported {len(zt)}; ECE card {card:.3f}, refit-always {refit:.3f} (a={a:.2f}, b={b:.2f})')
