// The Restate side of `cortex-bench workflows`: one service whose handlers
// are the benchmark's workflows, every step a durable `ctx.run` of nothing
// (Restate journals each step's result before the handler goes on).
//   seq(n):    n steps one after another
//   fanout(n): one step, n steps at once, one step after all of them
import * as restate from "@restatedev/restate-sdk";

const nothing = () => null;

const bench = restate.service({
  name: "bench",
  handlers: {
    seq: async (ctx, n) => {
      for (let i = 0; i < n; i++) {
        await ctx.run(`step-${i}`, nothing);
      }
      return n;
    },
    fanout: async (ctx, n) => {
      await ctx.run("start", nothing);
      const middle = [];
      for (let i = 0; i < n; i++) {
        middle.push(ctx.run(`task-${i}`, nothing));
      }
      await restate.RestatePromise.all(middle);
      await ctx.run("end", nothing);
      return n;
    },
  },
});

restate.serve({ services: [bench], port: Number(process.env.PORT || 9080) });
