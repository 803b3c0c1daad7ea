#include <cstdio>
__global__ void k(unsigned *out){ extern __shared__ char s[]; unsigned id; asm volatile("mov.u32 %0, %%smid;":"=r"(id));
 if(threadIdx.x==0){ out[blockIdx.x]=id; s[0]=1;} long long t=clock64(); while(clock64()-t<200000){} }
int main(){ int n=2048; unsigned *d; cudaMalloc(&d,n*4); cudaFuncSetAttribute(k,cudaFuncAttributeMaxDynamicSharedMemorySize,100000);
 k<<<n,128,100000>>>(d); cudaDeviceSynchronize(); unsigned h[2048]; cudaMemcpy(h,d,n*4,cudaMemcpyDeviceToHost);
 int sms; cudaDeviceGetAttribute(&sms,cudaDevAttrMultiProcessorCount,0); int c1[256]={0},c2[256]={0};
 for(int i=0;i<sms;i++) c1[h[i]]++; for(int i=sms;i<2*sms;i++) c2[h[i]]++;
 int a=0,b=0,both=0; for(int i=0;i<256;i++){a+=c1[i]>0;b+=c2[i]>0;both+=(c1[i]==1&&c2[i]==1);} 
 printf("sms %d: first %d distinct SMs, second %d distinct, SMs with one of each %d\n",sms,a,b,both);
 printf("first 16 smids:"); for(int i=0;i<16;i++) printf(" %u",h[i]); printf("\nblocks %d..: ",sms); for(int i=sms;i<sms+16;i++) printf(" %u",h[i]); printf("\n"); }
